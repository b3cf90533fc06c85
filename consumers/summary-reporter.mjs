// A node:test reporter that ends the run with the plain `N passed, N failed` line that .ci/run
// adds up (the same line test/support/summary-reporter.js prints for jest).
export default async function* summaryReporter(source) {
  let passed = 0;
  let failed = 0;
  let skipped = 0;
  for await (const event of source) {
    // Suites report too; only leaf tests count, as jest counts them.
    if (event.type !== 'test:pass' && event.type !== 'test:fail') continue;
    if (event.data.details?.type === 'suite') {
      // A suite whose hook failed fails without failing a test: count it once.
      if (
        event.type === 'test:fail' &&
        event.data.details.error?.failureType !== 'subtestsFailed'
      ) {
        failed++;
      }
      continue;
    }
    if (event.data.skip || event.data.todo) skipped++;
    else if (event.type === 'test:pass') passed++;
    else failed++;
  }
  yield `\n${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}\n`;
}
