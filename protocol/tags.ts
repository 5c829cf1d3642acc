/**
 * System tag formats. A system tag is a string the system understands; its format decides
 * which resource types may carry it, whether an admin may write it, and what it means.
 * User tags are free text and carry no meaning.
 */
import { parseSize } from './values.ts';

export const RESOURCE_TYPES = ['HostVO', 'ClusterVO', 'ZoneVO'] as const;
export type ResourceType = (typeof RESOURCE_TYPES)[number];

export interface SystemTagFormat {
  /** As documented, e.g. `reservedMemory::{size}`. */
  format: string;
  pattern: RegExp;
  resourceTypes: readonly ResourceType[];
  /** Written by the controller only (host metadata): an admin can neither create nor delete it. */
  inherent: boolean;
  /** At most one tag of this format per resource. */
  single: boolean;
  /** Extra check on the captured value; returns the problem or undefined. */
  check?: (value: string) => string | undefined;
}

const sizeCheck = (v: string) => (parseSize(v) === undefined ? `size[${v}] is not a number with an optional unit B/K/M/G/T` : undefined);

export const SYSTEM_TAG_FORMATS: readonly SystemTagFormat[] = [
  { format: 'reservedMemory::{size}', pattern: /^reservedMemory::(.+)$/, resourceTypes: ['HostVO'], inherent: false, single: true, check: sizeCheck },
  { format: 'host::reservedMemory::{size}', pattern: /^host::reservedMemory::(.+)$/, resourceTypes: ['ZoneVO', 'ClusterVO'], inherent: false, single: true, check: sizeCheck },
  { format: 'os::distribution::{distribution}', pattern: /^os::distribution::(.+)$/, resourceTypes: ['HostVO'], inherent: true, single: true },
  { format: 'os::release::{release}', pattern: /^os::release::(.+)$/, resourceTypes: ['HostVO'], inherent: true, single: true },
  { format: 'os::version::{version}', pattern: /^os::version::(.+)$/, resourceTypes: ['HostVO'], inherent: true, single: true },
  { format: 'qemu-img::version::{version}', pattern: /^qemu-img::version::(.+)$/, resourceTypes: ['HostVO'], inherent: true, single: true },
  { format: 'libvirt::version::{version}', pattern: /^libvirt::version::(.+)$/, resourceTypes: ['HostVO'], inherent: true, single: true },
  { format: 'hvm::{flag}', pattern: /^hvm::(vmx|svm)$/, resourceTypes: ['HostVO'], inherent: true, single: true },
  { format: 'capability:liveSnapshot', pattern: /^capability:liveSnapshot$/, resourceTypes: ['HostVO'], inherent: true, single: true },
];

export function matchSystemTag(tag: string): SystemTagFormat | undefined {
  return SYSTEM_TAG_FORMATS.find((f) => f.pattern.test(tag));
}

/** Builds the host metadata tags the controller writes on connect. */
export const metadataTag = {
  osDistribution: (v: string) => `os::distribution::${v}`,
  osRelease: (v: string) => `os::release::${v}`,
  osVersion: (v: string) => `os::version::${v}`,
  qemuImgVersion: (v: string) => `qemu-img::version::${v}`,
  libvirtVersion: (v: string) => `libvirt::version::${v}`,
  hvm: (flag: 'vmx' | 'svm') => `hvm::${flag}`,
  liveSnapshot: () => 'capability:liveSnapshot',
};

/** The size in a reserved-memory tag of either level, or undefined if `tag` is not one. */
export function reservedMemoryOf(tag: string, level: 'host' | 'parent'): number | undefined {
  const m = (level === 'host' ? /^reservedMemory::(.+)$/ : /^host::reservedMemory::(.+)$/).exec(tag);
  return m ? parseSize(m[1]!) : undefined;
}

export const MAX_TAG_LENGTH = 2048;
