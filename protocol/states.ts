/**
 * The two host state machines, as tables (ZStack HostState.java / HostStatus.java).
 * Admin state is what the operator wants; connection status is what the command channel
 * sees. They are independent: neither table looks at the other.
 */
import { HkError } from './errors.ts';

export const HOST_STATES = ['Enabled', 'Disabled', 'PreMaintenance', 'Maintenance'] as const;
export type HostState = (typeof HOST_STATES)[number];

/** Internal events; the API word `maintain` is mapped to `preMaintain` before it gets here. */
export const HOST_STATE_EVENTS = ['enable', 'disable', 'preMaintain', 'maintain'] as const;
export type HostStateEvent = (typeof HOST_STATE_EVENTS)[number];

/** API words accepted by changeHostState: both `maintain` and `preMaintain` start maintenance. */
export const API_STATE_EVENTS = ['enable', 'disable', 'maintain', 'preMaintain'] as const;
export type ApiStateEvent = (typeof API_STATE_EVENTS)[number];

export const HOST_STATE_TABLE: Record<HostState, Partial<Record<HostStateEvent, HostState>>> = {
  Enabled: { enable: 'Enabled', disable: 'Disabled', preMaintain: 'PreMaintenance' },
  Disabled: { enable: 'Enabled', disable: 'Disabled', preMaintain: 'PreMaintenance' },
  // `preMaintain` again re-runs the maintenance work (ZStack's way out of a stuck PreMaintenance).
  PreMaintenance: { enable: 'Enabled', disable: 'Disabled', preMaintain: 'PreMaintenance', maintain: 'Maintenance' },
  // A host in Maintenance must be enabled or disabled first: it has nothing left to evacuate.
  Maintenance: { enable: 'Enabled', disable: 'Disabled' },
};

export const HOST_STATUSES = ['Connecting', 'Connected', 'Disconnected'] as const;
export type HostStatus = (typeof HOST_STATUSES)[number];
export const HOST_STATUS_EVENTS = ['connecting', 'connected', 'disconnected'] as const;
export type HostStatusEvent = (typeof HOST_STATUS_EVENTS)[number];

/**
 * ZStack accepts every event in every status. We keep one rule it lacks (zstack#20): a
 * Disconnected host becomes Connected only through Connecting, i.e. a full connect, never
 * because a ping happened to answer.
 */
export const HOST_STATUS_TABLE: Record<HostStatus, Partial<Record<HostStatusEvent, HostStatus>>> = {
  Connecting: { connecting: 'Connecting', connected: 'Connected', disconnected: 'Disconnected' },
  Connected: { connecting: 'Connecting', connected: 'Connected', disconnected: 'Disconnected' },
  Disconnected: { connecting: 'Connecting', disconnected: 'Disconnected' },
};

export class IllegalTransitionError extends HkError {
  constructor(resource: string, current: string, event: string) {
    super('SYS.1005', `${resource} cannot take event[${event}] in its current state[${current}]`);
  }
}

/**
 * One lookup for both machines. `resource` names the thing in the error message,
 * e.g. `host[uuid:..., state:Maintenance]`.
 */
export function nextState<S extends string, E extends string>(
  table: Record<S, Partial<Record<E, S>>>,
  current: S,
  event: E,
  resource: string,
): S {
  const next = table[current]?.[event];
  if (next === undefined) throw new IllegalTransitionError(resource, current, event);
  return next;
}

/** PreMaintenance or Maintenance: not pinged, not connected, refused by reconnect. */
export function inMaintenance(state: HostState): boolean {
  return state === 'PreMaintenance' || state === 'Maintenance';
}

export function apiEventToStateEvent(e: ApiStateEvent): HostStateEvent {
  return e === 'maintain' ? 'preMaintain' : e;
}
