import { describe, expect, it } from 'vitest';
import { HkError } from '../../protocol/errors.ts';
import {
  apiEventToStateEvent, HOST_STATE_EVENTS, HOST_STATE_TABLE, HOST_STATES, HOST_STATUS_EVENTS, HOST_STATUS_TABLE,
  HOST_STATUSES, type HostState, type HostStateEvent, nextState,
} from '../../protocol/states.ts';

// The whole admin-state table, written out as the issue states it: enable/disable from every
// state; preMaintain from Enabled/Disabled/PreMaintenance; maintain only from PreMaintenance.
const EXPECTED: [HostState, HostStateEvent, HostState | null][] = [
  ['Enabled', 'enable', 'Enabled'], ['Enabled', 'disable', 'Disabled'], ['Enabled', 'preMaintain', 'PreMaintenance'], ['Enabled', 'maintain', null],
  ['Disabled', 'enable', 'Enabled'], ['Disabled', 'disable', 'Disabled'], ['Disabled', 'preMaintain', 'PreMaintenance'], ['Disabled', 'maintain', null],
  ['PreMaintenance', 'enable', 'Enabled'], ['PreMaintenance', 'disable', 'Disabled'], ['PreMaintenance', 'preMaintain', 'PreMaintenance'], ['PreMaintenance', 'maintain', 'Maintenance'],
  ['Maintenance', 'enable', 'Enabled'], ['Maintenance', 'disable', 'Disabled'], ['Maintenance', 'preMaintain', null], ['Maintenance', 'maintain', null],
];

describe('admin state table', () => {
  it('covers every state x event pair', () => {
    expect(EXPECTED).toHaveLength(HOST_STATES.length * HOST_STATE_EVENTS.length);
  });
  it.each(EXPECTED)('%s --%s--> %s', (from, event, to) => {
    const name = `host[uuid:abc, state:${from}]`;
    if (to) {
      expect(nextState(HOST_STATE_TABLE, from, event, name)).toBe(to);
    } else {
      let err: unknown;
      try {
        nextState(HOST_STATE_TABLE, from, event, name);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(HkError);
      expect((err as HkError).status).toBe(409);
      expect((err as HkError).details).toContain(name);
      expect((err as HkError).details).toContain(event);
      expect((err as HkError).details).toContain(from);
    }
  });
  it.each([['maintain', 'preMaintain'], ['preMaintain', 'preMaintain'], ['enable', 'enable'], ['disable', 'disable']] as const)(
    'API word %s is event %s', (api, event) => {
      expect(apiEventToStateEvent(api)).toBe(event);
    },
  );
});

describe('connection status table', () => {
  const cases = HOST_STATUSES.flatMap((s) => HOST_STATUS_EVENTS.map((e) => [s, e] as const));
  it.each(cases)('%s --%s-->', (from, event) => {
    const run = () => nextState(HOST_STATUS_TABLE, from, event, 'host[uuid:x]');
    // A Disconnected host is never flipped to Connected directly: only through Connecting.
    if (from === 'Disconnected' && event === 'connected') expect(run).toThrow(HkError);
    else expect(run()).toBe({ connecting: 'Connecting', connected: 'Connected', disconnected: 'Disconnected' }[event]);
  });
});
