import { test, expect } from '@playwright/test';
import { createItem, orderStats, waitForHydration } from './support';

test('a shopper taps Buy on a 360 px screen and sees the receipt', async ({ page, request }) => {
  const item = await createItem(request, { title: 'Leica M6 (e2e)', stock: 3 });

  await page.goto(`/items/${item.id}`);
  await expect(page.getByRole('heading', { name: 'Leica M6 (e2e)' })).toBeVisible();
  await waitForHydration(page);

  await page.getByRole('button', { name: /buy/i }).tap();

  const receipt = page.getByTestId('receipt');
  await expect(receipt).toBeVisible();
  await expect(receipt).toContainText(/Order placed/);
  const orderId = await receipt.getAttribute('data-order-id');
  expect(orderId).toMatch(/^[0-9a-f-]{36}$/);

  const overflows = await page.evaluate(
    () => document.documentElement.scrollWidth > document.documentElement.clientWidth,
  );
  expect(overflows, 'no horizontal scrolling at 360 px').toBe(false);
  await page.screenshot({ path: 'artifacts/receipt-360x780.png', fullPage: true });

  const stats = await orderStats(request, item.id);
  expect(stats.orders).toBe(1);
  expect(stats.stock).toBe(2);
});
