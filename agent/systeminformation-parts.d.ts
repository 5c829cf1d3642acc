/**
 * The three systeminformation modules agent/facts.ts loads on their own (not the package's
 * index, which loads all of its modules: facts.ts says why). The package types only its
 * index; these are the same functions (their types from there).
 */
declare module 'systeminformation/lib/osinfo.js' {
  export const osInfo: typeof import('systeminformation').osInfo;
}
declare module 'systeminformation/lib/cpu.js' {
  export const cpu: typeof import('systeminformation').cpu;
}
declare module 'systeminformation/lib/memory.js' {
  export const mem: typeof import('systeminformation').mem;
}
