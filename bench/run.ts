// `npm run bench`: runs the sections below in order and writes bench/REPORT.md (a full run)
// or bench/REPORT.partial.md (fewer sections or rounds). Knobs: see bench/settings.ts, e.g.
//   BENCH_QUICK=1 npm run bench                          smoke test, about 2 minutes
//   BENCH_ROUNDS=2 BENCH_SECTIONS=interleaved npm run bench
// A section is one entry in SECTIONS (see bench/section.ts for what it returns).
import { writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { CpuMeter } from './cpu.js';
import { interleavedSection } from './interleaved.section.js';
import { scaleOutSection } from './scale-out.section.js';
import { pgbenchSection } from './pgbench.section.js';
import { profileSection } from './profile.section.js';
import { purgeSection } from './purge.js';
import { fingerprintSection } from './fingerprint.js';
import { waitSection } from './wait.js';
import { eventsSection } from './events.section.js';
import { tableSizeSection } from './table-size.section.js';
import { collectMachine, sourceState } from './machine.js';
import { resolveDatabase, ROOT } from './processes.js';
import { renderReport, type SectionOutcome } from './report.js';
import type { BenchSection } from './section.js';
import { readSettings, reportPathFor } from './settings.js';

const SECTIONS: BenchSection[] = [
  interleavedSection,
  scaleOutSection,
  tableSizeSection,
  pgbenchSection,
  profileSection,
  purgeSection,
  fingerprintSection,
  waitSection,
  eventsSection,
];

const log = (message: string) =>
  console.log(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}`);

async function main(): Promise<void> {
  const started = Date.now();
  const loadBefore = loadavg();
  const settings = readSettings();
  const unknown = settings.sections?.filter((id) => !SECTIONS.some((s) => s.id === id)) ?? [];
  if (unknown.length) {
    throw new Error(
      `Unknown BENCH_SECTIONS ${unknown.join(', ')}; known: ${SECTIONS.map((s) => s.id).join(', ')}`,
    );
  }
  const chosen = SECTIONS.filter((s) => !settings.sections || settings.sections.includes(s.id));
  const complete = chosen.length === SECTIONS.length && !settings.quick && settings.rounds >= 5;
  const estimate = chosen.reduce((sum, s) => sum + (s.estimateSeconds?.(settings) ?? 0), 0);
  log(`sections: ${chosen.map((s) => s.id).join(', ')}; about ${Math.round(estimate / 60)} min`);

  const commit = sourceState();
  const database = await resolveDatabase();
  log(`database: ${database.source}`);
  const cpu = new CpuMeter(database.url);
  await cpu.connect();
  const outcomes: SectionOutcome[] = [];
  try {
    const context = { settings, database, cpu, log };
    for (const section of chosen) {
      log(`section ${section.id}: ${section.title}`);
      const sectionStart = Date.now();
      try {
        const result = await section.run(context);
        outcomes.push({ section, result, seconds: (Date.now() - sectionStart) / 1000 });
      } catch (error) {
        // One failing section should not cost the others' numbers: the report says it failed.
        console.error(error);
        process.exitCode = 1;
        outcomes.push({
          section,
          error: error instanceof Error ? error.message : String(error),
          seconds: (Date.now() - sectionStart) / 1000,
        });
      }
    }
    const machine = await collectMachine(database.url, database.source, commit);
    const path = reportPathFor(settings, ROOT, complete);
    writeFileSync(
      path,
      renderReport({
        date: new Date().toISOString(),
        elapsedSeconds: (Date.now() - started) / 1000,
        settings,
        complete,
        machine,
        loadAverage: { before: loadBefore, after: loadavg() },
        sections: outcomes,
      }),
    );
    if (settings.jsonPath) {
      const raw = Object.fromEntries(outcomes.map((o) => [o.section.id, o.result?.data ?? null]));
      writeFileSync(settings.jsonPath, JSON.stringify({ settings, machine, sections: raw }));
    }
    log(`wrote ${path} in ${Math.round((Date.now() - started) / 1000)} s`);
  } finally {
    await cpu.end();
    await database.stop();
  }
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
