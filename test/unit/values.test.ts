import { describe, expect, it } from 'vitest';
import { formatSize, formatZStackDate, isManagementAddress, isUuid, newUuid, parseDate, parseSize } from '../../protocol/values.ts';

describe('ZStack dates', () => {
  it.each([
    [Date.UTC(2015, 5, 1, 18, 49, 24), 'Jun 1, 2015 6:49:24 PM'],
    [Date.UTC(2020, 0, 9, 0, 5, 7), 'Jan 9, 2020 12:05:07 AM'],
    [Date.UTC(2020, 11, 31, 12, 0, 0), 'Dec 31, 2020 12:00:00 PM'],
    [Date.UTC(2021, 6, 4, 11, 59, 59), 'Jul 4, 2021 11:59:59 AM'],
  ])('%i formats as %s and parses back', (ms, text) => {
    expect(formatZStackDate(ms)).toBe(text);
    expect(parseDate(text)).toBe(ms);
  });
  it.each([
    ['2015-06-01T18:49:24Z', Date.UTC(2015, 5, 1, 18, 49, 24)],
    ['2015-06-01T18:49:24', Date.UTC(2015, 5, 1, 18, 49, 24)],
    ['2015-06-01 18:49:24', Date.UTC(2015, 5, 1, 18, 49, 24)],
    ['2015-06-01T20:49:24+02:00', Date.UTC(2015, 5, 1, 18, 49, 24)],
    ['2015-06-01', Date.UTC(2015, 5, 1)],
  ])('ISO %s', (text, ms) => expect(parseDate(text)).toBe(ms));
  it.each(['yesterday', 'Jun 1 2015', 'Foo 1, 2015 6:49:24 PM', 'Jun 1, 2015 13:49:24 PM', '', '2015-13-45'])('refuses %j', (t) => {
    expect(parseDate(t)).toBeUndefined();
  });
});

describe('sizes', () => {
  it.each([
    ['0', 0], ['512', 512], ['512B', 512], ['1K', 1024], ['512M', 512 * 2 ** 20], ['1g', 2 ** 30], ['2T', 2 * 2 ** 40], [' 3G ', 3 * 2 ** 30],
  ])('%j = %i bytes', (s, n) => expect(parseSize(s)).toBe(n));
  it.each(['', '-1G', '1.5G', '1X', 'G', '12 QB', '99999999999999999T'])('refuses %j', (s) => expect(parseSize(s)).toBeUndefined());
  it.each([[2 ** 30, '1G'], [1536 * 2 ** 20, '1536M'], [100, '100B']])('formats %i as %s', (n, s) => expect(formatSize(n)).toBe(s));
});

describe('management addresses', () => {
  it.each(['10.0.0.1', '192.168.1.254', 'kvm-1', 'kvm1.example.org', 'a'])('accepts %s', (a) => expect(isManagementAddress(a)).toBe(true));
  it.each(['', '10.0.0.300', '1.2.3', '-bad-.com', 'a b', 'x_y.com', 'a..b', `${'a'.repeat(64)}.com`])('refuses %j', (a) => {
    expect(isManagementAddress(a)).toBe(false);
  });
});

describe('uuids', () => {
  it('are 32 lowercase hex digits', () => {
    const u = newUuid();
    expect(u).toMatch(/^[0-9a-f]{32}$/);
    expect(isUuid(u)).toBe(true);
  });
  it.each(['A'.repeat(32), 'a'.repeat(31), '123e4567-e89b-12d3-a456-426614174000', 5])('refuses %j', (u) => expect(isUuid(u)).toBe(false));
});
