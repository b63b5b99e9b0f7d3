// The browser guard, proved by counting orders through the API.
import { test, expect, Route } from '@playwright/test';
import {
  artifact,
  countCalls,
  createItem,
  interceptCount,
  newShopper,
  orderStats,
  setVisibility,
  strings,
  waitForHydration,
} from './support';

/** Holds the place_order answers until released; the requests do reach the server. */
async function holdAnswers(page: import('@playwright/test').Page) {
  const held: Array<() => Promise<void>> = [];
  await page.route('**/sfn/place_order*', async (route: Route) => {
    const response = await route.fetch();
    await new Promise<void>((release) => held.push(async () => {
      await route.fulfill({ response }).catch(() => {});
      release();
    }));
  });
  return {
    count: () => held.length,
    releaseAll: async () => {
      await Promise.all(held.splice(0).map((release) => release()));
    },
  };
}

test('(a) a double click and ten rapid taps give exactly one order', async ({ page, request }, testInfo) => {
  const s = strings(testInfo);
  const item = await createItem(request, { stock: 5 });
  await page.goto(`/items/${item.id}`);
  await waitForHydration(page);
  const answers = await holdAnswers(page);
  const submits = countCalls(page, 'place_order');

  const button = page.getByRole('button', { name: s.buy });
  await button.dblclick();
  await expect(page.locator('.buy-button')).toHaveAttribute('aria-busy', 'true');
  const box = await page.locator('.buy-button').boundingBox();
  expect(box).not.toBeNull();
  for (let i = 0; i < 10; i++) {
    await page.touchscreen.tap(box!.x + box!.width / 2, box!.y + box!.height / 2);
  }
  expect(submits.n, 'only the first tap submitted').toBe(1);
  await answers.releaseAll();
  await expect(page.getByTestId('receipt')).toBeVisible();

  const stats = await orderStats(request, item.id);
  expect(stats.orders).toBe(1);
  expect(stats.units_ordered).toBe(1);

  // The swallowed taps are reported (sendBeacon on pagehide) and counted.
  const before = await interceptCount(request, 'swallowed_tap');
  await page.goto('/');
  await expect.poll(() => interceptCount(request, 'swallowed_tap')).toBeGreaterThanOrEqual(before + 11);
});

test('(b) a reload while the order is pending finds the receipt instead of ordering again', async ({ page, request }, testInfo) => {
  const s = strings(testInfo);
  const item = await createItem(request, { stock: 5 });
  await page.goto(`/items/${item.id}`);
  await waitForHydration(page);
  const answers = await holdAnswers(page);

  await page.getByRole('button', { name: s.buy }).click();
  await expect.poll(() => answers.count()).toBe(1);
  await expect.poll(async () => (await orderStats(request, item.id)).orders).toBe(1);

  await page.unroute('**/sfn/place_order*');
  const submits = countCalls(page, 'place_order');
  await page.reload();
  await waitForHydration(page);
  await expect(page.getByTestId('receipt')).toBeVisible();
  expect(submits.n, 'the reload looked the order up, it did not resubmit').toBe(0);

  const stats = await orderStats(request, item.id);
  expect(stats.orders).toBe(1);
});

test('(c) back then forward after success gives no new order', async ({ page, request }, testInfo) => {
  const s = strings(testInfo);
  const title = `History camera ${testInfo.project.name}`;
  const item = await createItem(request, { title, stock: 5 });
  await page.goto('/');
  await page.getByRole('link', { name: new RegExp(title) }).click();
  await waitForHydration(page);
  await page.getByRole('button', { name: s.buy }).click();
  await expect(page.getByTestId('receipt')).toBeVisible();
  const orderId = await page.getByTestId('receipt').getAttribute('data-order-id');

  const submits = countCalls(page, 'place_order');
  await page.goBack();
  await expect(page.getByRole('link', { name: new RegExp(title) })).toBeVisible();
  await page.goForward();
  await waitForHydration(page);
  await expect(page.getByTestId('receipt')).toHaveAttribute('data-order-id', orderId!);
  expect(submits.n).toBe(0);

  const stats = await orderStats(request, item.id);
  expect(stats.orders).toBe(1);
});

test('(d) with the page hidden, a queued retry waits until it is visible', async ({ page, request }, testInfo) => {
  const s = strings(testInfo);
  const item = await createItem(request, { stock: 5 });
  await page.goto(`/items/${item.id}`);
  await waitForHydration(page);

  // The first attempt fails in the network: its outcome is unknown.
  await page.route('**/sfn/place_order*', (route) => route.abort('connectionreset'), { times: 1 });
  const calls = { submit: countCalls(page, 'place_order'), lookup: countCalls(page, 'order_outcome') };
  await page.getByRole('button', { name: s.buy }).click();
  await expect(page.locator('.buy-button')).toHaveAttribute('data-phase', 'error');
  await setVisibility(page, 'hidden');

  // The automatic retry falls due after 1 s; hidden, it must not go out.
  await page.waitForTimeout(2_500);
  expect(calls.submit.n, 'only the failed attempt').toBe(1);
  expect(calls.lookup.n, 'no lookup while hidden').toBe(0);
  expect((await orderStats(request, item.id)).orders).toBe(0);

  await setVisibility(page, 'visible');
  await expect(page.getByTestId('receipt')).toBeVisible();
  expect(calls.lookup.n, 'visible again: the outcome is checked first').toBeGreaterThanOrEqual(1);
  const stats = await orderStats(request, item.id);
  expect(stats.orders).toBe(1);
});

test('(e) on a phone a double tap gives one order; idle, pending, success and sold-out are captured', async ({ page, request }, testInfo) => {
  const s = strings(testInfo);
  const item = await createItem(request, { title: 'Switch OLED', stock: 1 });
  await page.goto(`/items/${item.id}`);
  await waitForHydration(page);
  await page.screenshot({ path: artifact(testInfo, 'state-idle'), fullPage: true });

  const answers = await holdAnswers(page);
  const button = page.getByRole('button', { name: s.buy });
  const box = (await button.boundingBox())!;
  await page.touchscreen.tap(box.x + box.width / 2, box.y + box.height / 2);
  await page.touchscreen.tap(box.x + box.width / 2, box.y + box.height / 2);
  await expect(page.locator('.buy-button')).toHaveAttribute('aria-busy', 'true');
  await page.screenshot({ path: artifact(testInfo, 'state-pending'), fullPage: true });
  await answers.releaseAll();
  await expect(page.getByTestId('receipt')).toBeVisible();
  await page.screenshot({ path: artifact(testInfo, 'state-success'), fullPage: true });
  expect((await orderStats(request, item.id)).orders).toBe(1);

  // Another shopper finds it sold out.
  const other = await newShopper(page.context().browser()!, testInfo);
  const otherPage = await other.newPage();
  await otherPage.goto(`/items/${item.id}`);
  await waitForHydration(otherPage);
  await expect(otherPage.locator('.buy-button')).toHaveText(s.soldOut);
  await otherPage.screenshot({ path: artifact(testInfo, 'state-sold-out'), fullPage: true });
  await other.close();
});

test('(f) with JavaScript off the form orders once, even when submitted twice', async ({ browser, request }, testInfo) => {
  const s = strings(testInfo);
  const item = await createItem(request, { stock: 5 });
  const context = await newShopper(browser, testInfo, { javaScriptEnabled: false });
  const page = await context.newPage();
  await page.goto(`/items/${item.id}`);
  const token = await page.locator('input[name="idempotency_key"]').getAttribute('value');
  expect(token).toMatch(/^[0-9a-f-]{36}$/);

  // A double submit: the same form, with the same server-minted token, twice.
  const first = page.context().request.post(`/items/${item.id}/buy`, {
    form: { qty: '1', idempotency_key: token! },
    maxRedirects: 0,
  });
  await page.getByRole('button', { name: s.buy }).click();
  expect((await first).status()).toBe(303);
  await expect(page).toHaveURL(new RegExp(`order_key=${token}`));
  await expect(page.getByTestId('receipt')).toBeVisible();

  const stats = await orderStats(request, item.id);
  expect(stats.orders).toBe(1);
  await context.close();
});
