import { describe, expect, it } from 'vitest';
import {
  formatSize, formatZStackDate, isControllerEndpoint, isManagementAddress, isUuid, nameProblem, newUuid, normalizeIp,
  normalizeManagementAddress, parseDate, parseInetAton, parseSize,
} from '../../protocol/values.ts';

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
    ['0', 0], ['512', 512], ['512B', 512], ['1K', 1024], ['512M', 512 * 2 ** 20], ['1g', 2 ** 30], ['2T', 2 * 2 ** 40], ['3G', 3 * 2 ** 30],
  ])('%j = %i bytes', (s, n) => expect(parseSize(s)).toBe(n));
  it.each([
    '', '-1G', '1.5G', '1X', 'G', '12 QB', '99999999999999999T',
    // Nothing around the number: the contract's "nothing else around it".
    '1\n', '5 ', ' 5', '1 G', ' 3G ', '\t1K', '1G\n', '1\r\n', '\u00a01G', '1GB', '+1G', '1_000', '１G', '1e3',
  ])('refuses %j', (s) => expect(parseSize(s)).toBeUndefined());
  it.each([[2 ** 30, '1G'], [1536 * 2 ** 20, '1536M'], [100, '100B']])('formats %i as %s', (n, s) => expect(formatSize(n)).toBe(s));
});

describe('names', () => {
  it.each(['kvm-1', 'a', ' padded ', 'zone with spaces', 'café', 'خادم', '主机-1', 'x'.repeat(255)])('accepts %j', (n) => {
    expect(nameProblem(n)).toBeUndefined();
  });
  it.each([
    ['', 'white space'], [' ', 'white space'], ['   ', 'white space'], ['\u00a0\u3000', 'white space'],
    ['a\nb', 'control'], ['a\rb', 'control'], ['\tname', 'control'], ['a\u0000', 'control'], ['a\u001b[31m', 'control'],
    ['a\u007f', 'control'], ['a\u0085', 'control'], ['a\u2028b', 'control'], ['evil\u202egnp.exe', 'control'], ['\n', 'control'],
  ])('refuses %j (%s)', (n, why) => expect(nameProblem(n)).toContain(why));
});

describe('IPv4 spellings (what inet_aton and so Node connect to)', () => {
  it.each([
    ['127.0.0.12', '127.0.0.12'], ['0x7f.0.0.12', '127.0.0.12'], ['0X7F.0.0.0XC', '127.0.0.12'], ['0177.0.0.014', '127.0.0.12'],
    ['127.12', '127.0.0.12'], ['127.0.12', '127.0.0.12'], ['2130706444', '127.0.0.12'], ['0x7f00000c', '127.0.0.12'],
    ['010.0.0.1', '8.0.0.1'], ['1.2.65535', '1.2.255.255'], ['4294967295', '255.255.255.255'], ['0', '0.0.0.0'], ['00', '0.0.0.0'],
  ])('%s is %s', (s, ip) => expect(parseInetAton(s)).toBe(ip));
  it.each(['', '1.2.3.4.5', '1.2.3.256', '1.2.65536', '4294967296', '08.0.0.1', '0x', '0x.1', '1..2', '1.2.3.', '.1.2.3', '1.2.3.4 ', ' 1', '1a', '-1', '1.2.3.x'])(
    'refuses %j',
    (s) => expect(parseInetAton(s)).toBeUndefined(),
  );
});

describe('normalizeIp', () => {
  it.each([
    ['10.0.0.1', '10.0.0.1'], ['0x0a.1', '10.0.0.1'], ['::1', '::1'], ['0:0:0:0:0:0:0:1', '::1'], ['::', '::'],
    ['::ffff:10.0.0.1', '10.0.0.1'], ['::FFFF:a00:1', '10.0.0.1'], ['0:0:0:0:0:ffff:7f00:c', '127.0.0.12'],
    ['2001:DB8:0:0:0:0:0:1', '2001:db8::1'], ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'], ['1:0:0:2:0:0:0:3', '1:0:0:2::3'],
    ['2001:0db8:0000:0001:0001:0001:0001:0001', '2001:db8:0:1:1:1:1:1'], ['fe80::', 'fe80::'], ['1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8'],
  ])('%s -> %s', (s, ip) => expect(normalizeIp(s)).toBe(ip));
  it.each(['fe80::1%eth0', '1:2:3:4:5:6:7:8:9', ':::', 'g::1', 'kvm-1', '[::1]'])('refuses %j', (s) => expect(normalizeIp(s)).toBeUndefined());
});

describe('management addresses', () => {
  it.each([
    ['10.0.0.1', '10.0.0.1'], ['192.168.1.254', '192.168.1.254'], ['127.0.0.12', '127.0.0.12'], ['kvm-1', 'kvm-1'],
    ['kvm1.example.org', 'kvm1.example.org'], ['KVM1.Example.ORG', 'kvm1.example.org'], ['a', 'a'], ['::ffff:10.0.0.9', '10.0.0.9'],
    ['0xbeef.example.org', '0xbeef.example.org'], ['localhost-2', 'localhost-2'], ['mylocalhost', 'mylocalhost'],
  ])('accepts %s as %s', (a, stored) => {
    expect(normalizeManagementAddress(a)).toEqual({ address: stored });
    expect(isManagementAddress(a)).toBe(true);
  });
  it.each([
    ['', 'neither'], ['10.0.0.300', 'neither'], ['-bad-.com', 'neither'], ['a b', 'neither'], ['x_y.com', 'neither'], ['a..b', 'neither'],
    [`${'a'.repeat(64)}.com`, 'neither'], ['kvm.0x1', 'neither'], ['10.0.0.1\n', 'neither'], [' 10.0.0.1', 'neither'],
    // Other spellings of an address: refused, naming the address they mean.
    ['1.2.3', 'means 1.2.0.3'], ['0x7f.0.0.12', 'means 127.0.0.12'], ['127.12', 'means 127.0.0.12'], ['010.0.0.1', 'means 8.0.0.1'],
    ['2130706444', 'means 127.0.0.12'], ['10.0.0.01', 'means 10.0.0.1'],
    ['localhost', "controller's own"], ['LocalHost', "controller's own"], ['localhost.localdomain', "controller's own"],
    ['ip6-localhost', "controller's own"], ['x.localhost', "controller's own"], ['localhost6.localdomain6', "controller's own"],
    ['0.0.0.0', "host's address"], ['0', 'means 0.0.0.0'], ['0.1.2.3', "host's address"], ['224.0.0.1', "host's address"],
    ['255.255.255.255', "host's address"], ['::ffff:0.0.0.0', "host's address"],
    ['::1', 'IPv6'], ['fe80::1', 'IPv6'], ['fe80::1%eth0', 'neither'],
  ])('refuses %j (%s)', (a, why) => {
    expect(normalizeManagementAddress(a).problem).toContain(why);
    expect(isManagementAddress(a)).toBe(false);
  });
});

describe('the controller\'s own endpoint', () => {
  const self = { ports: [8080], addresses: ['10.1.1.1', '::ffff:192.168.0.5'] };
  it.each([
    ['127.0.0.1', 8080, true], ['127.9.9.9', 8080, true], ['0x7f.1', 8080, true], ['::1', 8080, true], ['10.1.1.1', 8080, true],
    ['192.168.0.5', 8080, true], ['::ffff:10.1.1.1', 8080, true],
    ['127.0.0.1', 7070, false], ['10.1.1.2', 8080, false], ['kvm-1', 8080, false],
  ])('%s:%i is the controller: %s', (ip, port, want) => expect(isControllerEndpoint(ip, port, self)).toBe(want));
});

describe('uuids', () => {
  it('are 32 lowercase hex digits', () => {
    const u = newUuid();
    expect(u).toMatch(/^[0-9a-f]{32}$/);
    expect(isUuid(u)).toBe(true);
  });
  it.each(['A'.repeat(32), 'a'.repeat(31), '123e4567-e89b-12d3-a456-426614174000', 5])('refuses %j', (u) => expect(isUuid(u)).toBe(false));
});
