/**
 * The controller's replay fence for signed agent pushes (facts, certificate requests):
 * protocol/replay-fence.ts has the reasoning. Its `notAfter` is a store row (kind 'pki',
 * uuid 'replay-fence'), so it is as durable as the store and controllers sharing a
 * database refuse what any of them may have accepted before its own start.
 *
 * Limit: with several controllers running at once, nonces are remembered per process, so a
 * push captured on its way to one controller could be shown to another within MAX_SKEW_MS.
 * Pushes only report facts and ask for certificates for the pushing host's own key (useless
 * to anyone without that key), so a replay changes nothing a fresh push would not.
 */
import { ReplayFence } from '../../protocol/replay-fence.ts';
import type { Clock } from '../clock.ts';
import type { Repository } from '../store/repository.ts';

export const FENCE_ROW = 'replay-fence';

interface FenceRow {
  uuid: typeof FENCE_ROW;
  notAfter: number;
}

export async function openControllerFence(repo: Repository, clock: Clock): Promise<ReplayFence> {
  const row = await repo.get<FenceRow>('pki', FENCE_ROW);
  let chain: Promise<void> = Promise.resolve();
  return new ReplayFence(() => clock.now(), clock.now(), row?.notAfter ?? 0, {
    write(notAfter) {
      // One write after another; each keeps the larger value (another controller may write too).
      chain = chain.catch(() => {}).then(() => repo.transaction(async (tx) => {
        const there = await tx.get<FenceRow>('pki', FENCE_ROW);
        if (!there) await tx.insert<FenceRow>('pki', { uuid: FENCE_ROW, notAfter });
        else if (there.notAfter < notAfter) await tx.update<FenceRow>('pki', FENCE_ROW, { notAfter });
      }));
      return chain;
    },
    flush: () => chain.catch(() => {}),
  });
}
