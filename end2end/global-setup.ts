// Starts the server binary built by `cargo leptos build` on a free port (it
// binds 127.0.0.1:0 and prints its URL), with a throwaway SQLite database,
// and stops it after the suite. Tests read BASE_URL and ADMIN_TOKEN.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const ADMIN_TOKEN = 'e2e-admin-token';

export default async function globalSetup(): Promise<() => Promise<void>> {
  const root = resolve(__dirname, '..');
  const targetDir = process.env.CARGO_TARGET_DIR ?? join(root, 'target');
  const binary = process.env.SERVER_BIN ?? join(targetDir, 'debug', 'server');
  if (!existsSync(binary)) {
    throw new Error(`server binary not found at ${binary}: run \`cargo leptos build\` first`);
  }
  const dataDir = mkdtempSync(join(tmpdir(), 'oversell-e2e-'));
  const child = spawn(binary, [], {
    cwd: root,
    env: {
      ...process.env,
      LEPTOS_SITE_ADDR: '127.0.0.1:0',
      // cargo-leptos writes the site under the workspace's target/, even
      // when CARGO_TARGET_DIR moves the compiled code elsewhere.
      LEPTOS_SITE_ROOT: process.env.LEPTOS_SITE_ROOT ?? join(root, 'target', 'site'),
      DATABASE_URL: `sqlite://${dataDir}/e2e.sqlite3`,
      ADMIN_TOKEN,
      COOKIE_SECRET: 'e2e-cookie-secret-that-is-at-least-32-bytes',
      SEED_DEMO_ITEMS: 'false',
      REDIS_URL: '',
      REDIS_CLUSTER_NODES: '',
      RUST_LOG: process.env.E2E_SERVER_LOG ?? 'warn',
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const url = await new Promise<string>((ok, fail) => {
    const timer = setTimeout(() => fail(new Error('server did not start within 60 s')), 60_000);
    let seen = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      seen += chunk.toString();
      const match = seen.match(/running at (http:\/\/[^\s]+)/);
      if (match) {
        clearTimeout(timer);
        ok(match[1]);
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      fail(new Error(`server exited early with code ${code}`));
    });
  });
  process.env.BASE_URL = url;
  process.env.ADMIN_TOKEN = ADMIN_TOKEN;
  return async () => {
    const exited = new Promise((done) => child.once('exit', done));
    child.kill('SIGTERM');
    await exited;
    rmSync(dataDir, { recursive: true, force: true });
  };
}
