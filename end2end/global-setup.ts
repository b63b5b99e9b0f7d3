// Starts the release server built by `scripts/build-release` (the build that
// ships: content-hashed, precompressed assets) on free ports (it binds
// 127.0.0.1:0 and prints its URL), each with a throwaway SQLite database, and
// stops them after the suite:
//
// - BASE_URL: orders are final at once (no payment window), as by default;
// - PAY_BASE_URL: a two-minute payment window and the demo provider;
// - EXPIRY_BASE_URL: a three-second window, for watching orders expire.
//
// Tests read those and ADMIN_TOKEN. SERVER_BIN points it at another binary
// (e.g. a debug build's).
import { ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const ADMIN_TOKEN = 'e2e-admin-token';

interface Server {
  url: string;
  child: ChildProcess;
  dataDir: string;
}

async function startServer(root: string, binary: string, extraEnv: Record<string, string>): Promise<Server> {
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
      PAYMENT_WINDOW_SECS: '',
      PAYMENT_PROVIDER: '',
      RUST_LOG: process.env.E2E_SERVER_LOG ?? 'warn',
      ...extraEnv,
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
  return { url, child, dataDir };
}

async function stopServer(server: Server) {
  const exited = new Promise((done) => server.child.once('exit', done));
  server.child.kill('SIGTERM');
  await exited;
  rmSync(server.dataDir, { recursive: true, force: true });
}

export default async function globalSetup(): Promise<() => Promise<void>> {
  const root = resolve(__dirname, '..');
  const targetDir = process.env.CARGO_TARGET_DIR ?? join(root, 'target');
  const binary = process.env.SERVER_BIN ?? join(targetDir, 'release', 'server');
  if (!existsSync(binary)) {
    throw new Error(`server binary not found at ${binary}: run \`scripts/build-release\` first`);
  }
  const configs: Array<Record<string, string>> = [
    {},
    { PAYMENT_WINDOW_SECS: '120', PAYMENT_PROVIDER: 'demo' },
    { PAYMENT_WINDOW_SECS: '3', PAYMENT_PROVIDER: 'demo', PAYMENT_REAPER_INTERVAL_MS: '200' },
  ];
  const servers: Server[] = [];
  try {
    for (const env of configs) servers.push(await startServer(root, binary, env));
  } catch (failure) {
    await Promise.all(servers.map(stopServer));
    throw failure;
  }
  process.env.BASE_URL = servers[0].url;
  process.env.PAY_BASE_URL = servers[1].url;
  process.env.EXPIRY_BASE_URL = servers[2].url;
  process.env.ADMIN_TOKEN = ADMIN_TOKEN;
  return async () => {
    await Promise.all(servers.map(stopServer));
  };
}
