/**
 * The one error catalogue. Every error the controller returns comes from here: a ZStack
 * code, the HTTP status it travels with, and a one-line meaning. docs/errors.md lists the
 * same table and test/unit/errors.test.ts keeps the two in step.
 *
 * Codes are ZStack's (header/.../errorcode/SysErrors.java, host/HostErrors.java,
 * identity/IdentityErrors.java) so a ZStack admin's scripts that switch on them keep working.
 */
export const ERRORS = {
  'SYS.1000': { status: 500, title: 'internal error' },
  'SYS.1001': { status: 503, title: 'operation timed out' },
  'SYS.1004': { status: 409, title: 'unable to delete resource' },
  'SYS.1005': { status: 409, title: 'unable to change resource state' },
  'SYS.1006': { status: 409, title: 'operation not allowed in the current state' },
  // Also sent with 404 for an unknown resource named in the path, and 413 for an oversize
  // body: the contract files both under bad input, SYS.1007.
  'SYS.1007': { status: 400, title: 'invalid argument' },
  // Also sent with 429 and Retry-After when logins are throttled (ZStack has no code for it).
  'ID.1000': { status: 401, title: 'authentication failed' },
  'ID.1001': { status: 401, title: 'invalid or expired session' },
  'HOST.1000': { status: 503, title: 'unable to add host' },
  'HOST.1001': { status: 503, title: 'unable to enter maintenance mode' },
  'HOST.1002': { status: 503, title: 'unable to reconnect host' },
  'HOST.1003': { status: 503, title: 'connection error' },
  'HOST.1010': { status: 409, title: 'host is disconnected' },
  // ZStack's HostAllocatorError.NO_AVAILABLE_HOST.
  'HOST_ALLOCATION.1000': { status: 503, title: 'no available host' },
  'VM.1000': { status: 503, title: 'VM operation failed' },
} as const;

export type ErrorCode = keyof typeof ERRORS;

/** The JSON shape ZStack's ErrorCode serialises to (the fields its SDK reads). */
export interface ErrorBody {
  code: ErrorCode;
  description: string;
  details: string;
}

/**
 * A failure meant for the caller. `details` names the field or the resource
 * (`host[uuid:..., state:...]`), never a stack.
 */
export class HkError extends Error {
  readonly code: ErrorCode;
  readonly details: string;
  readonly status: number;
  constructor(code: ErrorCode, details: string, status?: number) {
    super(`${code}: ${details}`);
    this.name = 'HkError';
    this.code = code;
    this.details = details;
    this.status = status ?? ERRORS[code].status;
  }
  toBody(): ErrorBody {
    return { code: this.code, description: ERRORS[this.code].title, details: this.details };
  }
}

export const invalidArgument = (details: string) => new HkError('SYS.1007', details);
/** An unknown resource named in the URL path (an unknown one in a body is invalidArgument). */
export const notFound = (details: string) => new HkError('SYS.1007', details, 404);
export const tooLarge = (details: string) => new HkError('SYS.1007', details, 413);
export const operationError = (details: string) => new HkError('SYS.1006', details);

/** Turns anything thrown into a caller-safe error: HkError as is, everything else SYS.1000. */
export function toHkError(err: unknown): HkError {
  if (err instanceof HkError) return err;
  const msg = err instanceof Error ? err.message : String(err);
  return new HkError('SYS.1000', `internal error: ${msg.split('\n')[0]}`);
}
