/**
 * The fifteen global configurations of the contract, with their defaults, validation and
 * descriptions (from reference/zstack-host-doc.txt). A config is addressed as category/name.
 *
 * Every number has an upper bound that means something: a period a Node timer can hold (Node
 * caps setTimeout at 2^31 - 1 ms, ~24.8 days, and fires at once past it), a degree of
 * parallelism a controller can serve. Configs that depend on each other are checked together
 * (CONFIG_RELATIONS), against the values they will have once the update is applied.
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
/** An integer lo..hi written in plain decimal digits (no sign, point, exponent or spaces). */
const intBetween = (lo: number, hi: number) => (v: string) => /^\d{1,16}$/.test(v) && Number(v) >= lo && Number(v) <= hi;
const sizeAtMost = (max: number) => (v: string) => {
  const n = parseSize(v);
  return n !== undefined && n <= max;
};

const BOOL = 'true or false';
/** A day: pings further apart than that leave a dead host unnoticed for too long to be useful. */
const MAX_PING_INTERVAL_S = 86_400;
/** An hour: a ping that has not answered in an hour has failed. */
const MAX_PING_TIMEOUT_S = 3_600;
/** More hosts at once than the controller's global limit on agent calls (200) buys nothing. */
const MAX_PARALLELISM = 10_000;
const TiB = 1024 ** 4;

export const CONFIG_DEFS: readonly ConfigDef[] = [
  {
    category: 'host', name: 'load.all', defaultValue: 'true', rule: BOOL, validate: bool,
    description: 'Connect all hosts at once when the controller starts; when false, connect load.parallelismDegree hosts at a time.',
  },
  {
    category: 'host', name: 'load.parallelismDegree', defaultValue: '100', rule: `an integer from 1 to ${MAX_PARALLELISM}`,
    validate: intBetween(1, MAX_PARALLELISM),
    description: 'How many hosts the controller connects at once at start-up when load.all is false.',
  },
  {
    category: 'host', name: 'ping.interval', defaultValue: '60', rule: `an integer from 1 to ${MAX_PING_INTERVAL_S} (seconds)`,
    validate: intBetween(1, MAX_PING_INTERVAL_S),
    description: `Seconds between two pings of a connected host, at most ${MAX_PING_INTERVAL_S} (a day). ping.timeout must stay below it.`,
  },
  {
    category: 'host', name: 'ping.timeout', defaultValue: '10', rule: `an integer from 1 to ${MAX_PING_TIMEOUT_S} (seconds)`,
    validate: intBetween(1, MAX_PING_TIMEOUT_S),
    description: `Seconds a ping may take before it counts as failed, at most ${MAX_PING_TIMEOUT_S} (an hour) and below ping.interval.`,
  },
  {
    category: 'host', name: 'ping.parallelismDegree', defaultValue: '100', rule: `an integer from 1 to ${MAX_PARALLELISM}`,
    validate: intBetween(1, MAX_PARALLELISM),
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
    category: 'host', name: 'cpu.overProvisioning.ratio', defaultValue: '10', rule: 'an integer from 1 to 1000', validate: intBetween(1, 1000),
    description: 'How many virtual CPUs a host offers per physical CPU: its CPU capacity is cpuNum x ratio.',
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
    // Each migration moves a VM's whole memory over the network; past 100 at once from one
    // host they only slow each other down.
    category: 'kvm', name: 'vm.migrationQuantity', defaultValue: '2', rule: 'an integer from 1 to 100', validate: intBetween(1, 100),
    description: 'How many VMs are migrated at once when a KVM host enters maintenance.',
  },
  {
    category: 'kvm', name: 'reservedMemory', defaultValue: '512M',
    rule: 'a size from 0 to 1024T: a number with an optional unit B/K/M/G/T (no unit means bytes), nothing else around it',
    validate: sizeAtMost(1024 * TiB),
    description: 'Memory kept back on every KVM host for the system, unless a zone, cluster or host tag says otherwise.',
  },
  {
    category: 'kvm', name: 'dataVolume.maxNum', defaultValue: '24', rule: 'an integer from 0 to 24', validate: intBetween(0, 24),
    description: 'The most data volumes a VM on a KVM host may have attached.',
  },
  {
    // ZStack's rule is > 2; 1000 commands in flight on one host is already past what libvirt serves.
    category: 'kvm', name: 'host.syncLevel', defaultValue: '10', rule: 'an integer from 3 to 1000', validate: intBetween(3, 1000),
    description: 'The most commands the controller runs on one KVM host at once.',
  },
];

/**
 * Rules between configs, checked on every update against the values after it, and at load.
 * `check` gets each config's value by key and returns the problem, naming every config in it.
 */
export interface ConfigRelation {
  keys: readonly string[];
  check: (value: (key: string) => string) => string | undefined;
}

export const CONFIG_RELATIONS: readonly ConfigRelation[] = [
  {
    // A ping that may last longer than the gap between two pings would overlap the next one,
    // and a host would only be declared dead after more than an interval.
    keys: ['host/ping.timeout', 'host/ping.interval'],
    check: (v) => {
      const timeout = Number(v('host/ping.timeout'));
      const interval = Number(v('host/ping.interval'));
      return timeout < interval ? undefined : `host/ping.timeout (${timeout}) must stay below host/ping.interval (${interval})`;
    },
  },
];

export const configKey = (category: string, name: string) => `${category}/${name}`;

export function findConfigDef(category: string, name: string): ConfigDef | undefined {
  return CONFIG_DEFS.find((d) => d.category === category && d.name === name);
}
