/**
 * Strict schemas for what agents send the controller: registration, facts pushes, and the
 * facts read at connect time. An agent signs with its own host's secret, which proves who it
 * is, not that what it says is sane: a compromised or buggy host must not be able to make the
 * controller answer 500, store a 100 KB tag, or write `[object Object]` into the inventory.
 * Every field is bounded, typed and free of control characters; unknown fields are refused.
 *
 * Bounds: facts become host system tags (`os::distribution::{v}`, at most MAX_TAG_LENGTH =
 * 2,048 characters as the API allows), so text facts stay far below that; numbers are what a
 * real machine can have, with room (a CPU count of 100,000, 8 PiB of memory).
 */
import { z } from 'zod';
import type { FactsPush, HostFacts, RegisterCmd } from './agent.ts';
import type { CertificateCmd } from './pki.ts';
import { describeIssue } from './api.ts';
import { invalidArgument } from './errors.ts';
import { isPrintable, nameProblem } from './values.ts';

/** Free text an agent reads from the system (OS names, CPU model): may be empty, never a control character. */
const text = (max: number) =>
  z.string().max(max, `must be at most ${max} characters`).refine(isPrintable, 'must not contain control characters');
/** `9.0.0`, `7.2.22`: what agent/facts.ts parses out of `--version`. */
const version = z.string().max(64, 'must be at most 64 characters').regex(/^\d+(\.\d+){0,7}$/, 'must be a version like 9.0.0');
/** Identifiers: boot ids (a uuid, or `unknown`), agent versions (`0.1.0`, `0.1.0-rc.1+abc`). */
const token = (max: number) => z.string().min(1, 'must not be empty').max(max, `must be at most ${max} characters`).regex(/^[A-Za-z0-9._+-]+$/, 'must be letters, digits and . _ + -');
const count = (max: number) => z.number().int('must be an integer').min(0, 'must be >= 0').max(max, `must be at most ${max}`);

export const HostFactsSchema = z.strictObject({
  osDistribution: text(255),
  osRelease: text(255),
  osVersion: text(255),
  architecture: token(32).optional(),
  qemuImgVersion: version.nullable(),
  libvirtVersion: version.nullable(),
  hvm: z.enum(['vmx', 'svm']).nullable(),
  cpuModel: text(255),
  cpuCores: count(100_000),
  cpuSockets: count(100_000),
  cpuNum: count(100_000),
  cpuMhz: count(1_000_000),
  memoryBytes: count(Number.MAX_SAFE_INTEGER),
  bootId: token(64),
  agentVersion: token(64),
  hypervisor: z.enum(['libvirt', 'simulator']),
  liveSnapshot: z.boolean(),
}) satisfies z.ZodType<HostFacts>;

export const FactsPushSchema = z.strictObject({ facts: HostFactsSchema }) satisfies z.ZodType<FactsPush>;

/** SPKI PEM of a public key (the CA checks it is ECDSA P-256 when it issues). */
const publicKeyPem = z.string().max(4096, 'must be at most 4096 characters')
  .regex(/^-----BEGIN PUBLIC KEY-----\n[A-Za-z0-9+/=\n]+-----END PUBLIC KEY-----\n?$/, 'must be a PEM public key (SPKI)');

export const RegisterSchema = z.strictObject({
  token: z.string().min(1, 'must not be empty').max(200, 'must be at most 200 characters'),
  // Becomes the host's name: the API's rule for names (1-255, not blank, no control characters).
  hostname: z.string().min(1, 'must not be empty').max(255, 'must be at most 255 characters').superRefine((v, ctx) => {
    const problem = nameProblem(v);
    if (problem) ctx.addIssue({ code: 'custom', message: problem });
  }),
  managementIp: z.string().min(1, 'must not be empty').max(253, 'must be at most 253 characters'),
  port: z.number().int('must be an integer').min(1, 'must be 1-65535').max(65535, 'must be 1-65535'),
  publicKey: publicKeyPem,
}) satisfies z.ZodType<RegisterCmd>;

/** What an agent sends for a (new or renewed) certificate: its public key. */
export const CertificateSchema = z.strictObject({ publicKey: publicKeyPem }) satisfies z.ZodType<CertificateCmd>;

/**
 * Host facts as the controller may use them, from anything an agent sent (a push or the
 * connect flow's `/host/fact` answer). Throws SYS.1007 naming the first bad field
 * (`facts.hvm must be one of vmx, svm`); returns a fresh object holding only the known fields.
 */
export function checkFacts(x: unknown): HostFacts {
  const r = HostFactsSchema.safeParse(x);
  if (!r.success) throw invalidArgument(describeIssue(r.error.issues[0]!, 'facts'));
  return r.data;
}
