// Test data goes in through the API, never through SQL; order counts come
// back through the API too.
import { APIRequestContext, Browser, BrowserContextOptions, Page, TestInfo, devices, expect } from '@playwright/test';

export interface Item {
  id: number;
  title: string;
  stock: number;
  version: number;
  max_per_buyer: number | null;
}

export interface Stats {
  orders: number;
  units_ordered: number;
  duplicate_keys: number;
  stock: number;
}

const admin = () => ({ Authorization: `Bearer ${process.env.ADMIN_TOKEN}` });

export async function createItem(
  request: APIRequestContext,
  fields: { title?: string; stock: number; price_cents?: number; max_per_buyer?: number },
): Promise<Item> {
  const response = await request.post('/api/admin/items', {
    headers: admin(),
    data: { title: 'Film camera', price_cents: 4200, condition: 'Good', seller: 'E2E', ...fields },
  });
  expect(response.status()).toBe(201);
  return response.json();
}

/** Orders of an item as the database counts them (admin API). */
export async function orderStats(request: APIRequestContext, itemId: number): Promise<Stats> {
  const response = await request.get(`/api/admin/items/${itemId}/stats`, { headers: admin() });
  expect(response.status()).toBe(200);
  return response.json();
}

/** The page is hydrated: the Buy panel's submit handler is live. */
export async function waitForHydration(page: Page) {
  await expect(page.locator('form.buy-panel[data-hydrated="true"]')).toHaveCount(1);
}

/** What the pages say, per locale of the running project. */
const STRINGS = {
  en: { buy: /buy now/i, retry: /try again/i, placed: /Order placed/, soldOut: /Sold out/, switchTo: '简体中文' },
  zh: { buy: /立即购买/, retry: /重试/, placed: /下单成功/, soldOut: /已售罄/, switchTo: 'English' },
};

export function strings(testInfo: TestInfo) {
  const locale = String(testInfo.project.use.locale ?? 'en-US');
  return locale.startsWith('zh') ? STRINGS.zh : STRINGS.en;
}

/** A file name under artifacts/ that says which project took it. */
export function artifact(testInfo: TestInfo, name: string) {
  return `artifacts/${testInfo.project.name}-${name}.png`;
}

/** Makes the page report itself hidden or visible (Page Visibility API). */
export async function setVisibility(page: Page, state: 'hidden' | 'visible') {
  await page.evaluate((state) => {
    Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => state });
    Object.defineProperty(document, 'hidden', { configurable: true, get: () => state === 'hidden' });
    document.dispatchEvent(new Event('visibilitychange'));
  }, state);
}

/** Counts the page's calls to a server function, e.g. `place_order`. */
export function countCalls(page: Page, endpoint: string) {
  const calls = { n: 0 };
  page.on('request', (request) => {
    if (request.url().includes(`/sfn/${endpoint}`)) calls.n += 1;
  });
  return calls;
}

/** A second shopper on the same kind of phone and language as this project. */
export async function newShopper(browser: Browser, testInfo: TestInfo, extra: BrowserContextOptions = {}) {
  const use = testInfo.project.use;
  return browser.newContext({
    ...devices['Pixel 5'],
    viewport: use.viewport ?? { width: 360, height: 780 },
    locale: use.locale,
    baseURL: process.env.BASE_URL,
    ...extra,
  });
}

/** The server's count of browser intercepts for a reason, from /metrics. */
export async function interceptCount(request: APIRequestContext, reason: string): Promise<number> {
  const text = await (await request.get('/metrics')).text();
  const line = text.split('\n').find((l) => l.startsWith(`oversell_browser_intercepts_total{reason="${reason}"}`));
  return line ? Number(line.split(' ').pop()) : 0;
}
