// Browser tests against a server this suite starts itself (global-setup.ts)
// on a free port with a fresh SQLite database. Debian's chromium, never a
// downloaded browser.
import { defineConfig, devices } from '@playwright/test';

const chromiumArgs = [
  '--headless=new',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export default defineConfig({
  testDir: './tests',
  globalSetup: './global-setup.ts',
  outputDir: './test-results',
  fullyParallel: false,
  workers: 1,
  retries: 0,
  forbidOnly: !!process.env.CI,
  timeout: 60_000,
  expect: { timeout: 15_000 },
  reporter: [['list']],
  use: {
    baseURL: process.env.BASE_URL,
    headless: true,
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
      args: chromiumArgs,
    },
    trace: 'retain-on-failure',
    screenshot: 'only-on-failure',
  },
  // Every test runs in both languages, as a 360x780 touch phone (the H5
  // WebView case); Accept-Language follows the locale.
  projects: [
    {
      name: 'mobile-en',
      use: {
        ...devices['Pixel 5'],
        browserName: 'chromium',
        viewport: { width: 360, height: 780 },
        locale: 'en-US',
      },
    },
    {
      name: 'mobile-zh',
      use: {
        ...devices['Pixel 5'],
        browserName: 'chromium',
        viewport: { width: 360, height: 780 },
        locale: 'zh-CN',
      },
    },
  ],
});
