/**
 * MigrateVm as a durable flow: one step that migrates the VM (vm-ops.ts records the
 * migration, the destination and its reservation in one transaction) and, after a restart,
 * settles the recorded migration by asking both agents before deciding anything.
 */
import { HkError } from '../../protocol/errors.ts';
import { one } from '../../protocol/inventory.ts';
import { RESOURCES, type VmRow } from '../../protocol/resources.ts';
import type { Repository } from '../store/repository.ts';
import type { FlowRunner } from './runner.ts';
import type { VmOps } from './vm-ops.ts';

export const MIGRATE_VM = 'migrate-vm';

export interface MigrateCtx {
  vmUuid: string;
  /** Where the VM was when asked: a resume that finds it elsewhere knows the move happened. */
  sourceHostUuid: string;
  targetHostUuid?: string;
}

export function defineMigrateVm(runner: FlowRunner, repo: Repository, vmOps: VmOps): void {
  runner.define<MigrateCtx>({
    kind: MIGRATE_VM,
    apiName: 'MigrateVm',
    steps: [
      {
        name: 'migrate',
        run: async (ctx, f) => {
          if (f.resumed) {
            for (const m of await vmOps.migrationsOf(f.uuid)) await vmOps.resumeMigration(m, f.signal);
            const vm = await repo.get<VmRow>('vm', ctx.vmUuid);
            if (!vm) throw new HkError('VM.1000', `vm[uuid:${ctx.vmUuid}] is gone`);
            if (vm.hostUuid !== ctx.sourceHostUuid) return;
          }
          await vmOps.migrate(ctx.vmUuid, { targetHostUuid: ctx.targetHostUuid, flowUuid: f.uuid, fromHostUuid: ctx.sourceHostUuid });
        },
      },
    ],
    result: async (ctx) => {
      const vm = await repo.get<VmRow>('vm', ctx.vmUuid);
      if (!vm) throw new HkError('VM.1000', `vm[uuid:${ctx.vmUuid}] is gone`);
      return one(RESOURCES.vm, vm);
    },
  });
}
