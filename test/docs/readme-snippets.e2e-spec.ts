// Every TypeScript snippet in README.md and example/README.md compiles as written: each is
// type-checked as its own module, with the package imported by name as users do (mapped to
// src/ by tsconfig.json's paths), so the docs cannot drift from the code.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const DOCS = ['README.md', 'example/README.md'];

interface Snippet {
  doc: string;
  line: number;
  code: string;
  /** Where the compiler sees it: a module of its own inside the repository. */
  path: string;
}

function snippetsOf(doc: string): Snippet[] {
  const lines = readFileSync(join(ROOT, doc), 'utf8').split('\n');
  const snippets: Snippet[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (!/^```(ts|typescript)\s*$/.test(lines[i])) continue;
    const start = i + 1;
    while (i + 1 < lines.length && !/^```\s*$/.test(lines[i + 1])) i++;
    const name = `${doc.replace(/[^a-z0-9]+/gi, '-')}-line-${start + 1}.ts`;
    snippets.push({
      doc,
      line: start + 1,
      code: lines.slice(start, i + 1).join('\n'),
      path: join(ROOT, 'test', 'docs', '.snippets', name),
    });
    i++;
  }
  return snippets;
}

/** Type-checks the snippets in one program; returns each snippet's diagnostics as text. */
function typeCheck(snippets: Snippet[]): Map<Snippet, string[]> {
  const config = ts.getParsedCommandLineOfConfigFile(
    join(ROOT, 'tsconfig.json'),
    {},
    {
      ...ts.sys,
      onUnRecoverableConfigFileDiagnostic: (diagnostic) => {
        throw new Error(ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n'));
      },
    },
  )!;
  const byPath = new Map(snippets.map((snippet) => [snippet.path, snippet]));
  const options = { ...config.options, noEmit: true };
  const host = ts.createCompilerHost(options);
  const { fileExists, readFile, getSourceFile } = host;
  host.fileExists = (file) => byPath.has(file) || fileExists(file);
  host.readFile = (file) => byPath.get(file)?.code ?? readFile(file);
  host.getSourceFile = (file, language, ...rest) => {
    const snippet = byPath.get(file);
    return snippet
      ? ts.createSourceFile(file, snippet.code, language, true)
      : getSourceFile(file, language, ...rest);
  };
  const program = ts.createProgram([...byPath.keys()], options, host);
  const results = new Map<Snippet, string[]>();
  for (const snippet of snippets) {
    const source = program.getSourceFile(snippet.path)!;
    const diagnostics = [
      ...program.getSyntacticDiagnostics(source),
      ...program.getSemanticDiagnostics(source),
    ];
    results.set(
      snippet,
      diagnostics.map((diagnostic) => {
        const { line } = source.getLineAndCharacterOfPosition(diagnostic.start ?? 0);
        const text = ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n');
        return `${snippet.doc}:${snippet.line + line} TS${diagnostic.code}: ${text}`;
      }),
    );
  }
  return results;
}

describe('TypeScript snippets in the docs', () => {
  const snippets = DOCS.flatMap(snippetsOf);
  let results: Map<Snippet, string[]>;

  beforeAll(() => {
    results = typeCheck(snippets);
  }, 120_000);

  it('finds the snippets', () => {
    expect(snippets.filter((snippet) => snippet.doc === 'README.md').length).toBeGreaterThan(5);
    expect(snippets.filter((snippet) => snippet.doc === 'example/README.md').length).toBe(1);
  });

  it.each(snippets.map((snippet) => [`${snippet.doc}:${snippet.line}`, snippet] as const))(
    '%s compiles as written',
    (_where, snippet) => {
      expect(results.get(snippet)).toEqual([]);
    },
  );

  it("README's testing example is test/docs/testing-example.e2e-spec.ts, which runs", () => {
    const file = readFileSync(join(ROOT, 'test/docs/testing-example.e2e-spec.ts'), 'utf8');
    // The file's own header comment, then exactly the snippet.
    const body = file.replace(/^(\/\/.*\n)+\n/, '');
    expect(snippets.map((snippet) => `${snippet.code}\n`)).toContain(body);
  });
});
