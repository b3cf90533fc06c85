// Runs the Python client of the published idempotency document against the example, as a
// user would: `published_client.py` is that code byte for byte, and only the values the
// document leaves for the user are filled in (the URL, the headers the API needs, the
// payload, and the key, "a unique operation identifier"). fillPublishedClient refuses a
// script whose placeholders are not exactly the published ones, so nothing else can change.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** The published client, byte for byte. */
export const PUBLISHED_CLIENT = readFileSync(
  new URL('./published_client.py', import.meta.url),
  'utf8',
);

/** The placeholders of the published client, each replaced exactly once. */
const PLACEHOLDERS = {
  url: /^url = "https:\/\/api\.xcover\.com\/x\/partners\/YOUR_PARTNER_ID\/instant_booking\/"$/m,
  payload: /^ {4}# \.\.\. generated payload$/m,
  headers: /^ {4}# \.\.\. other required headers$/m,
  key: /'x-idempotency-key': '[0-9a-f-]{36}'/,
};

export interface ClientFill {
  /** The booking URL, ending in `/instant_booking/` as published. */
  url: string;
  /** The headers the API needs besides the key (Authorization, Content-Type). */
  headers: Record<string, string>;
  /** The booking, as JSON. */
  payload: Record<string, unknown>;
  key: string;
}

/** The script with the user's values filled in; throws if a placeholder is not there once. */
export function fillPublishedClient(script: string, fill: ClientFill): string {
  const replace = (text: string, name: keyof typeof PLACEHOLDERS, value: string) => {
    const pattern = PLACEHOLDERS[name];
    const global = new RegExp(pattern.source, `${pattern.flags}g`);
    const found = text.match(global)?.length ?? 0;
    if (found !== 1) throw new Error(`The client's ${name} placeholder appears ${found} times.`);
    return text.replace(pattern, () => value);
  };
  let filled = replace(script, 'url', `url = ${JSON.stringify(fill.url)}`);
  filled = replace(
    filled,
    'payload',
    Object.entries(fill.payload)
      .map(([name, value]) => `    ${JSON.stringify(name)}: ${pythonLiteral(value)},`)
      .join('\n'),
  );
  filled = replace(
    filled,
    'headers',
    Object.entries(fill.headers)
      .map(([name, value]) => `    ${JSON.stringify(name)}: ${JSON.stringify(value)},`)
      .join('\n'),
  );
  return replace(filled, 'key', `'x-idempotency-key': ${JSON.stringify(fill.key)}`);
}

/** A JSON value as a Python literal (JSON strings and numbers already are). */
function pythonLiteral(value: unknown): string {
  if (value === null || value === undefined) return 'None';
  if (value === true) return 'True';
  if (value === false) return 'False';
  if (Array.isArray(value)) return `[${value.map(pythonLiteral).join(', ')}]`;
  if (typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>);
    return `{${entries.map(([name, item]) => `${JSON.stringify(name)}: ${pythonLiteral(item)}`).join(', ')}}`;
  }
  return JSON.stringify(value);
}

export interface Python {
  /** The interpreter (PYTHON, else `python3`). */
  command: string;
  /** e.g. `Python 3.11.9, requests 2.34.2, urllib3 2.7.0`. */
  versions: string;
}

/** python3 with `requests`, or why not. */
export async function findPython(): Promise<Python | { missing: string }> {
  const command = process.env.PYTHON ?? 'python3';
  const probe =
    'import platform, requests, urllib3; print(f"Python {platform.python_version()}, requests {requests.__version__}, urllib3 {urllib3.__version__}")';
  try {
    // Generous: importing requests can take seconds on a loaded machine.
    const { code, stdout, stderr } = await runPython(command, probe, 60_000);
    if (code === 0) return { command, versions: stdout.trim() };
    if (code === null) return { missing: `${command} did not answer within a minute` };
    const reason = /No module named '?(\w+)/.exec(stderr)?.[1];
    return { missing: reason ? `${command} has no "${reason}" module` : stderr.trim() };
  } catch (error) {
    return { missing: `no ${command} (${error instanceof Error ? error.message : String(error)})` };
  }
}

export interface ClientRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Starts the interpreter and imports what the client imports, then runs the client (as
 * its own `__main__`, unchanged) once go() is called: a demo can then time its request to
 * the millisecond, whatever Python's start-up costs on the machine.
 */
const LAUNCHER = `
import sys, json, logging, requests, urllib3
print("READY", flush=True)
sys.stdin.readline()
script = sys.argv[1]
sys.argv = ["published_client.py"]
exec(compile(script, "published_client.py", "exec"), {"__name__": "__main__"})
`;

export interface PythonClient {
  /** Resolves once the interpreter is up with the client's imports loaded. */
  ready: Promise<void>;
  /** Runs the client now. */
  go(): void;
  /** What the client printed and its exit code; rejects if the interpreter cannot start. */
  done: Promise<ClientRun>;
}

/** Starts the client script (given as text); it runs on go() and is killed after `timeoutMs`. */
export function startPythonClient(
  command: string,
  script: string,
  timeoutMs = 60_000,
): PythonClient {
  const child = spawn(command, ['-c', LAUNCHER, script], {
    env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1', PYTHONIOENCODING: 'utf-8' },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  let markReady!: () => void;
  const ready = new Promise<void>((resolve) => (markReady = resolve));
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk.toString();
    if (stdout.startsWith('READY\n')) {
      stdout = stdout.slice('READY\n'.length);
      markReady();
    }
  });
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  child.stdin.on('error', () => undefined);
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const done = new Promise<ClientRun>((resolve, reject) => {
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      markReady();
      resolve({ code, stdout, stderr });
    });
  });
  return { ready, go: () => child.stdin.end('go\n'), done };
}

/** Runs the client script at once. */
export async function runPythonClient(command: string, script: string): Promise<ClientRun> {
  const client = startPythonClient(command, script);
  await client.ready;
  client.go();
  return client.done;
}

/** Runs a one-off snippet (not the client). */
function runPython(command: string, code: string, timeoutMs: number): Promise<ClientRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, ['-c', code], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** The booking id in what the client printed (`print(response.json())`: a Python dict). */
export function printedBookingId(stdout: string): string | undefined {
  return /'id': '([0-9a-f-]{36})'/.exec(stdout)?.[1];
}
