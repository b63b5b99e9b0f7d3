// The payment deadline in the browser, on the servers global-setup.ts
// starts with the demo payment provider: a two-minute window (PAY_BASE_URL)
// and a three-second one (EXPIRY_BASE_URL). Data goes in and counts come
// back through the API.
import { test, expect, APIRequestContext, Page, TestInfo } from '@playwright/test';
import { artifact, createItem, newShopper, orderStats, strings, waitForHydration } from './support';
import type { Stats } from './support';

/** The stats fields of the payment deadline. */
interface PaymentStats extends Stats {
  units_returned: number;
  orders_by_status: Record<string, number>;
}

async function paymentStats(request: APIRequestContext, itemId: number) {
  return (await orderStats(request, itemId)) as PaymentStats;
}

const PAY = process.env.PAY_BASE_URL!;
const EXPIRY = process.env.EXPIRY_BASE_URL!;

/** What the payment pages say, per locale of the running project. */
const PAYMENT_STRINGS = {
  en: {
    awaiting: /Awaiting payment/,
    timeLeft: /\d+ min \d\d s left/,
    pay: 'Pay',
    demo: /Demo checkout/,
    payDemo: /Pay \(demo\)/,
    paid: /^Paid$/,
    expired: /Expired/,
  },
  zh: {
    awaiting: /待支付/,
    timeLeft: /剩余 \d+ 分 \d\d 秒/,
    pay: '去支付',
    demo: /演示收银台/,
    payDemo: /支付\(演示\)/,
    paid: /^已支付$/,
    expired: /已过期/,
  },
};

function paymentStrings(testInfo: TestInfo) {
  return String(testInfo.project.use.locale ?? 'en-US').startsWith('zh') ? PAYMENT_STRINGS.zh : PAYMENT_STRINGS.en;
}

function orderRow(page: Page, orderId: string) {
  return page.locator(`[data-testid="order"][data-order-id="${orderId}"]`);
}

async function fitsThePhone(page: Page) {
  const overflows = await page.evaluate(
    () => document.documentElement.scrollWidth > document.documentElement.clientWidth,
  );
  expect(overflows, 'no horizontal scrolling at 360 px').toBe(false);
}

test.describe('with a two-minute payment window', () => {
  test.use({ baseURL: PAY });

  test('a shopper buys, pays on the demo checkout and sees the order paid', async ({ page, request }, testInfo) => {
    const s = strings(testInfo);
    const p = paymentStrings(testInfo);
    const item = await createItem(request, { title: `Pay me ${testInfo.project.name}`, stock: 2 });
    await page.goto(`/items/${item.id}`);
    await waitForHydration(page);
    await page.getByRole('button', { name: s.buy }).tap();

    const receipt = page.getByTestId('receipt');
    await expect(receipt).toContainText(s.placed);
    await expect(receipt.getByTestId('deadline')).toContainText(p.awaiting);
    await expect(receipt.getByTestId('time-left')).toHaveText(p.timeLeft);
    const orderId = (await receipt.getAttribute('data-order-id'))!;
    await fitsThePhone(page);
    await page.screenshot({ path: artifact(testInfo, 'receipt-awaiting-payment'), fullPage: true });

    await receipt.getByRole('link', { name: p.pay, exact: true }).tap();
    await expect(page).toHaveURL(new RegExp(`/pay/${orderId}$`));
    await expect(page.getByRole('note')).toContainText(p.demo);
    await fitsThePhone(page);
    await page.screenshot({ path: artifact(testInfo, 'demo-checkout'), fullPage: true });
    await page.getByRole('button', { name: p.payDemo }).tap();

    await expect(page).toHaveURL(/\/orders$/);
    const row = orderRow(page, orderId);
    await expect(row.locator('.status')).toHaveAttribute('data-status', 'paid');
    await expect(row.locator('.status')).toHaveText(p.paid);
    await fitsThePhone(page);
    await page.screenshot({ path: artifact(testInfo, 'my-orders-paid'), fullPage: true });

    const stats = await paymentStats(request, item.id);
    expect(stats.orders).toBe(1);
    expect(stats.stock).toBe(1);
    expect(stats.orders_by_status.paid).toBe(1);
  });

  test('buying, "my orders" and paying work without JavaScript', async ({ browser, request }, testInfo) => {
    const s = strings(testInfo);
    const p = paymentStrings(testInfo);
    const item = await createItem(request, { title: `No script ${testInfo.project.name}`, stock: 1 });
    const context = await newShopper(browser, testInfo, { baseURL: PAY, javaScriptEnabled: false });
    const page = await context.newPage();
    await page.goto(`/items/${item.id}`);
    await page.getByRole('button', { name: s.buy }).click();
    const receipt = page.getByTestId('receipt');
    await expect(receipt.getByTestId('deadline')).toContainText(p.awaiting);
    const orderId = (await receipt.getAttribute('data-order-id'))!;

    await page.goto('/orders');
    const row = orderRow(page, orderId);
    await expect(row.locator('.status')).toHaveAttribute('data-status', 'awaiting_payment');
    await expect(row.getByTestId('time-left')).toHaveText(p.timeLeft);
    await row.getByRole('link', { name: p.pay, exact: true }).click();
    await expect(page.getByRole('note')).toContainText(p.demo);
    await page.getByRole('button', { name: p.payDemo }).click();
    await expect(page).toHaveURL(/\/orders$/);
    await expect(orderRow(page, orderId).locator('.status')).toHaveAttribute('data-status', 'paid');
    await context.close();
  });
});

test.describe('with a three-second payment window', () => {
  test.use({ baseURL: EXPIRY });

  test('an unpaid order expires and its unit is bought by the next shopper', async ({ page, browser, request }, testInfo) => {
    const s = strings(testInfo);
    const p = paymentStrings(testInfo);
    const item = await createItem(request, { title: `Expiring ${testInfo.project.name}`, stock: 1 });
    await page.goto(`/items/${item.id}`);
    await waitForHydration(page);
    await page.getByRole('button', { name: s.buy }).tap();
    const receipt = page.getByTestId('receipt');
    await expect(receipt.getByTestId('deadline')).toContainText(p.awaiting);
    const orderId = (await receipt.getAttribute('data-order-id'))!;
    expect((await paymentStats(request, item.id)).stock).toBe(0);

    // Nobody pays: within the window plus a reaper interval it expires.
    await expect
      .poll(async () => {
        await page.goto('/orders');
        return orderRow(page, orderId).locator('.status').getAttribute('data-status');
      }, { timeout: 20_000 })
      .toBe('expired');
    await expect(orderRow(page, orderId).locator('.status')).toHaveText(p.expired);
    await page.screenshot({ path: artifact(testInfo, 'my-orders-expired'), fullPage: true });

    const next = await newShopper(browser, testInfo, { baseURL: EXPIRY });
    const other = await next.newPage();
    await other.goto(`/items/${item.id}`);
    await expect(other.getByTestId('stock')).toHaveText('1');
    await waitForHydration(other);
    await other.getByRole('button', { name: s.buy }).tap();
    await expect(other.getByTestId('receipt')).toContainText(s.placed);
    await next.close();

    const stats = await paymentStats(request, item.id);
    expect(stats.orders).toBe(2);
    expect(stats.stock).toBe(0);
    expect(stats.units_returned).toBe(1);
  });
});
