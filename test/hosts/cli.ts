/**
 * Test hosts by hand (root):
 *   npx tsx test/hosts/cli.ts create 3 [--prefix hkt] [--first 1] [--kvm installed|bare]   prints the hosts as JSON
 *   npx tsx test/hosts/cli.ts destroy hkt1 hkt2                      tears down those hosts
 *   npx tsx test/hosts/cli.ts clean [prefix]                         tears down every <prefix>N
 * Hosts outlive this process; each one's root password is also in <dir>/root-password, e.g.
 *   SSHPASS=$(cat /tmp/hostkeeper-testhosts/hkt1/root-password) sshpass -e ssh root@10.199.1.2
 */
import { cleanStaleTestHosts, createTestHosts, destroyTestHostNamed, testHostsSupport } from './testhosts.ts';

const USAGE = 'usage: cli.ts create <count> [--prefix p] [--first n] [--kvm installed|bare] | destroy <name>... | clean [prefix]';

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === 'create') {
    const support = await testHostsSupport();
    if (!support.ok) throw new Error(`test hosts not supported here: ${support.why}`);
    const count = Number(rest[0]);
    const opt = (flag: string) => {
      const i = rest.indexOf(flag);
      return i >= 0 ? rest[i + 1] : undefined;
    };
    const first = opt('--first');
    const kvm = opt('--kvm');
    if (kvm !== undefined && kvm !== 'installed' && kvm !== 'bare') throw new Error(`--kvm must be installed or bare, got ${kvm}`);
    const hosts = await createTestHosts(count, { prefix: opt('--prefix'), first: first === undefined ? undefined : Number(first), kvm });
    const rows = hosts.map(({ name, ip, gatewayIp, rootPassword, dir }) => ({ name, ip, gatewayIp, rootPassword, dir }));
    process.stdout.write(JSON.stringify(rows, null, 2) + '\n');
    return 0;
  }
  if (cmd === 'destroy' && rest.length > 0) {
    for (const name of rest) await destroyTestHostNamed(name);
    return 0;
  }
  if (cmd === 'clean') {
    await cleanStaleTestHosts(rest[0]);
    return 0;
  }
  process.stderr.write(USAGE + '\n');
  return 2;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  },
);
