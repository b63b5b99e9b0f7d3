// Drop day in the browser (issue 14): the countdown turns into a live Buy
// button at the start without a reload; a buyer joins the line, is let in
// and buys with the pass; a buyer still waiting is told sold out the
// moment the last unit goes. Items go in through the admin API.
import { test, expect, APIRequestContext, Page, TestInfo, request as playwrightRequest } from '@playwright/test';
import { artifact, orderStats, strings, waitForHydration } from './support';

const DROP_STRINGS = {
  en: { notYet: /Not on sale yet/, opensIn: /Sale opens in/, join: /Join the line/, turn: /your turn/, soldOut: /Sold out/ },
  zh: { notYet: /尚未开售/, opensIn: /距开售还有/, join: /排队/, turn: /轮到您了/, soldOut: /已售罄/ },
};

function dropStrings(testInfo: TestInfo) {
  return String(testInfo.project.use.locale ?? 'en-US').startsWith('zh') ? DROP_STRINGS.zh : DROP_STRINGS.en;
}

async function serverNow(request: APIRequestContext): Promise<number> {
  return (await (await request.get('/api/time')).json()).now_ms;
}

async function createDrop(request: APIRequestContext, fields: Record<string, unknown>): Promise<{ id: number }> {
  const response = await request.post('/api/admin/items', {
    headers: { Authorization: `Bearer ${process.env.ADMIN_TOKEN}` },
    data: { title: 'Drop sneaker', price_cents: 9900, condition: 'New', seller: 'E2E', ...fields },
  });
  expect(response.status()).toBe(201);
  return response.json();
}

/** Marks the page; a reload would lose the mark. */
async function markNoReload(page: Page) {
  await page.evaluate(() => ((window as unknown as { stayed: boolean }).stayed = true));
}

async function stillSamePage(page: Page) {
  expect(await page.evaluate(() => (window as unknown as { stayed?: boolean }).stayed)).toBe(true);
}

async function waitForLineHydration(page: Page) {
  await expect(page.locator('.line-panel[data-hydrated="true"]')).toHaveCount(1);
}

test('the countdown turns into a live Buy button at the start, without a reload', async ({ page, request }, testInfo) => {
  const t = dropStrings(testInfo);
  const s = strings(testInfo);
  const item = await createDrop(request, { stock: 3, sale_starts_at_ms: (await serverNow(request)) + 12_000 });
  await page.goto(`/items/${item.id}`);
  await waitForHydration(page);
  await markNoReload(page);
  const countdown = page.getByTestId('sale-countdown');
  await expect(countdown).toHaveText(t.opensIn);
  const button = page.locator('button.buy-button');
  await expect(button).toHaveText(t.notYet);
  await expect(button).toHaveAttribute('aria-disabled', 'true');
  await page.screenshot({ path: artifact(testInfo, 'drop-countdown') });
  // A tap before the start orders nothing (the countdown still runs after
  // the tap, so it was before the start). Forced: Playwright would wait
  // for an aria-disabled button to turn enabled.
  await button.click({ force: true });
  await expect(countdown).toHaveCount(1);
  expect((await orderStats(request, item.id)).orders).toBe(0);

  await expect(countdown).toHaveCount(0, { timeout: 20_000 });
  await expect(button).toHaveText(s.buy);
  await expect(button).not.toHaveAttribute('aria-disabled', 'true');
  await stillSamePage(page);
  await button.click();
  await expect(page.getByTestId('receipt')).toContainText(s.placed);
  expect((await orderStats(request, item.id)).orders).toBe(1);
});

test('a buyer joins the line, is let in and buys with the pass', async ({ page, request }, testInfo) => {
  const t = dropStrings(testInfo);
  const s = strings(testInfo);
  const item = await createDrop(request, { stock: 1, admission_per_second: 20 });
  await page.goto(`/items/${item.id}`);
  await waitForLineHydration(page);
  await markNoReload(page);
  await expect(page.locator('.fairness-rule a')).toHaveAttribute('href', `/api/items/${item.id}/fairness`);
  await expect(page.locator('form.buy-panel')).toHaveCount(0);
  await page.getByRole('button', { name: t.join }).click();
  const status = page.getByTestId('line-status');
  await expect(status).toHaveAttribute('data-state', 'admitted', { timeout: 15_000 });
  await expect(status).toContainText(t.turn);
  await waitForHydration(page);
  await page.screenshot({ path: artifact(testInfo, 'drop-admitted') });
  await page.locator('button.buy-button').click();
  await expect(page.getByTestId('receipt')).toContainText(s.placed);
  await stillSamePage(page);
  expect((await orderStats(request, item.id)).orders).toBe(1);
});

test('a buyer still in line is told sold out when the last unit goes', async ({ page, request, baseURL }, testInfo) => {
  const t = dropStrings(testInfo);
  const item = await createDrop(request, { stock: 1, admission_per_second: 20 });
  // Another buyer, through the JSON API, joins first and takes the unit.
  const rival = await playwrightRequest.newContext({ baseURL });
  expect((await rival.post('/api/session')).ok()).toBe(true);
  expect((await rival.post(`/api/items/${item.id}/queue`)).status()).toBe(200);
  let pass: string | undefined;
  await expect
    .poll(async () => {
      const answer = await (await rival.get(`/api/items/${item.id}/queue`)).json();
      pass = answer.pass;
      return answer.state;
    })
    .toBe('admitted');

  await page.goto(`/items/${item.id}`);
  await waitForLineHydration(page);
  await markNoReload(page);
  await page.getByRole('button', { name: t.join }).click();
  const status = page.getByTestId('line-status');
  await expect(status).toHaveAttribute('data-state', 'waiting');

  const order = await rival.post('/api/orders', {
    headers: { 'Idempotency-Key': `rival-${testInfo.project.name}`, 'Queue-Pass': pass! },
    data: { item_id: item.id, qty: 1 },
  });
  expect(order.status()).toBe(201);
  await expect(status).toHaveAttribute('data-state', 'sold_out', { timeout: 15_000 });
  await expect(status).toContainText(t.soldOut);
  await stillSamePage(page);
  await page.screenshot({ path: artifact(testInfo, 'drop-sold-out') });
  await rival.dispose();
});
