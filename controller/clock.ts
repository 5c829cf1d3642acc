/** The shared injected clock (protocol/clock.ts). */
export { type Clock, sleep, systemClock } from '../protocol/clock.ts';
