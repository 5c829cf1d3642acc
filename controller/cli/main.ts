/**
 * `hostkeeper <Action> key=value ...`: wires runCli (run.ts) to the process. Started by
 * bin/hostkeeper.mjs (npx hostkeeper) or `npm run cli --`.
 */
import { runCli } from './run.ts';

let job: { uuid: string } | undefined;

// Ctrl-C while following a job stops watching, not the job: say how to look at it later.
process.on('SIGINT', () => {
  if (job) process.stderr.write(`\ninterrupted; job ${job.uuid} goes on: hostkeeper GetJob uuid=${job.uuid}\n`);
  else process.stderr.write('\n');
  process.exit(130);
});
// `hostkeeper QueryHost | head`: a closed pipe is not an error worth a stack trace.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw err;
});

try {
  process.exitCode = await runCli(process.argv.slice(2), {
    stdout: process.stdout,
    stderr: process.stderr,
    env: process.env,
    // The \r-redrawn line only where a person watches: both streams on a terminal.
    isTTY: Boolean(process.stdout.isTTY && process.stderr.isTTY),
    columns: process.stderr.columns,
    onJob: (j) => {
      job = j;
    },
  });
} catch (err) {
  process.stderr.write(`Error: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
}
