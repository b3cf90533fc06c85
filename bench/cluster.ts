// The scale-out target: WORKERS copies of bench/app.ts behind Node's cluster module, all
// listening on one port (the primary accepts and hands connections out round-robin) and all
// sharing one database. Speaks the same IPC as a single app: ready (with the worker pids),
// stats (summed over the workers, and per worker), stop.
import cluster, { type Worker } from 'node:cluster';

interface WorkerStats {
  runs: { plain: number; orders: number };
  queries: number;
}

const count = Number(process.env.WORKERS ?? 2);
cluster.setupPrimary({ exec: new URL('./app.ts', import.meta.url).pathname });
const workers: Worker[] = Array.from({ length: count }, () => cluster.fork());

await Promise.all(
  workers.map(
    (worker) =>
      new Promise<void>((done, fail) => {
        worker.once('exit', (code) => fail(new Error(`cluster worker exited with ${code}`)));
        worker.on('message', (message: { ready?: boolean }) => message?.ready && done());
      }),
  ),
);
for (const worker of workers) worker.removeAllListeners('exit');

function statsOf(worker: Worker): Promise<WorkerStats> {
  return new Promise((done) => {
    const listener = (message: { stats?: WorkerStats }) => {
      if (message?.stats) {
        worker.off('message', listener);
        done(message.stats);
      }
    };
    worker.on('message', listener);
    worker.send({ command: 'stats' });
  });
}

process.on('message', (message: { command: string }) => {
  if (message.command === 'stats') {
    void Promise.all(workers.map(statsOf)).then((all) =>
      process.send?.({
        stats: {
          runs: {
            plain: all.reduce((sum, stats) => sum + stats.runs.plain, 0),
            orders: all.reduce((sum, stats) => sum + stats.runs.orders, 0),
          },
          queries: all.reduce((sum, stats) => sum + stats.queries, 0),
          workers: all.map((stats, i) => ({ pid: workers[i].process.pid, runs: stats.runs })),
        },
      }),
    );
  }
  if (message.command === 'stop') {
    let left = workers.length;
    for (const worker of workers) {
      worker.once('exit', () => --left === 0 && process.exit(0));
      worker.send({ command: 'stop' });
    }
  }
});
process.send?.({ ready: true, pids: workers.map((worker) => worker.process.pid) });
