/**
 * The fourteen global configurations of the contract, with their defaults, validation and
 * descriptions (from reference/zstack-host-doc.txt). A config is addressed as category/name.
 */
import { parseSize } from './values.ts';

export interface ConfigDef {
  category: string;
  name: string;
  defaultValue: string;
  /** The rule in words; a refused value gets this in its error. */
  rule: string;
  description: string;
  validate: (v: string) => boolean;
}

const bool = (v: string) => v === 'true' || v === 'false';
const intAbove = (min: number) => (v: string) => /^\d+$/.test(v) && Number.isSafeInteger(Number(v)) && Number(v) > min;
const intBetween = (lo: number, hi: number) => (v: string) => /^\d+$/.test(v) && Number(v) >= lo && Number(v) <= hi;
const size = (v: string) => parseSize(v) !== undefined;

const BOOL = 'true or false';

export const CONFIG_DEFS: readonly ConfigDef[] = [
  {
    category: 'host', name: 'load.all', defaultValue: 'true', rule: BOOL, validate: bool,
    description: 'Connect all hosts at once when the controller starts; when false, connect load.parallelismDegree hosts at a time.',
  },
  {
    category: 'host', name: 'load.parallelismDegree', defaultValue: '100', rule: 'an integer > 0', validate: intAbove(0),
    description: 'How many hosts the controller connects at once at start-up when load.all is false.',
  },
  {
    category: 'host', name: 'ping.interval', defaultValue: '60', rule: 'an integer > 0 (seconds)', validate: intAbove(0),
    description: 'Seconds between two pings of a connected host. Keep ping.timeout below it.',
  },
  {
    category: 'host', name: 'ping.timeout', defaultValue: '10', rule: 'an integer > 0 (seconds)', validate: intAbove(0),
    description: 'Seconds a ping may take before it counts as failed.',
  },
  {
    category: 'host', name: 'ping.parallelismDegree', defaultValue: '100', rule: 'an integer > 0', validate: intAbove(0),
    description: 'The most pings the controller has in flight at once.',
  },
  {
    category: 'host', name: 'connection.autoReconnectOnError', defaultValue: 'true', rule: BOOL, validate: bool,
    description: 'Reconnect a host automatically when its command channel drops; when false an admin reconnects it.',
  },
  {
    category: 'host', name: 'maintenanceMode.ignoreError', defaultValue: 'false', rule: BOOL, validate: bool,
    description: 'Enter maintenance even when moving or stopping a VM fails (such VMs may still run on the host).',
  },
  {
    category: 'hostAllocator', name: 'reservedCapacity.zoneLevel', defaultValue: 'true', rule: BOOL, validate: bool,
    description: 'Honour the zone tag host::reservedMemory::{size} when reserving host memory.',
  },
  {
    category: 'hostAllocator', name: 'reservedCapacity.clusterLevel', defaultValue: 'true', rule: BOOL, validate: bool,
    description: 'Honour the cluster tag host::reservedMemory::{size} when reserving host memory.',
  },
  {
    category: 'hostAllocator', name: 'reservedCapacity.hostLevel', defaultValue: 'true', rule: BOOL, validate: bool,
    description: 'Honour the host tag reservedMemory::{size} when reserving host memory.',
  },
  {
    category: 'kvm', name: 'vm.migrationQuantity', defaultValue: '2', rule: 'an integer > 0', validate: intAbove(0),
    description: 'How many VMs are migrated at once when a KVM host enters maintenance.',
  },
  {
    category: 'kvm', name: 'reservedMemory', defaultValue: '512M', rule: 'a size >= 0: a number with an optional unit B/K/M/G/T', validate: size,
    description: 'Memory kept back on every KVM host for the system, unless a zone, cluster or host tag says otherwise.',
  },
  {
    category: 'kvm', name: 'dataVolume.maxNum', defaultValue: '24', rule: 'an integer from 0 to 24', validate: intBetween(0, 24),
    description: 'The most data volumes a VM on a KVM host may have attached.',
  },
  {
    category: 'kvm', name: 'host.syncLevel', defaultValue: '10', rule: 'an integer > 2', validate: intAbove(2),
    description: 'The most commands the controller runs on one KVM host at once.',
  },
];

export const configKey = (category: string, name: string) => `${category}/${name}`;

export function findConfigDef(category: string, name: string): ConfigDef | undefined {
  return CONFIG_DEFS.find((d) => d.category === category && d.name === name);
}
