/** Polling a job: 202 while running (with progress), 200 with the result, 503 with the error, 404 expired. */
import { notFound } from '../../protocol/errors.ts';
import { type Api, h } from './common.ts';

export function jobRoutes({ core, router }: Api): void {
  router.get('/v1/api-jobs/:uuid', h(async (req, res) => {
    const job = await core.jobs.get(req.params.uuid as string);
    if (!job) throw notFound(`job[uuid:${req.params.uuid}] is not found or has expired`);
    if (job.status === 'Running') res.status(202).json(job.progress ? { progress: job.progress } : {});
    else if (job.status === 'Succeeded') res.status(200).json(job.result ?? {});
    else res.status(503).json({ error: job.error });
  }));
}
