import { test, expect } from '@playwright/test';
import { artifact, createItem, orderStats, strings, waitForHydration } from './support';

test('a shopper taps Buy on a 360 px screen and sees the receipt', async ({ page, request }, testInfo) => {
  const s = strings(testInfo);
  const item = await createItem(request, { title: 'Leica M6 (e2e)', stock: 3 });

  await page.goto(`/items/${item.id}`);
  await expect(page.getByRole('heading', { name: 'Leica M6 (e2e)' })).toBeVisible();
  await waitForHydration(page);

  await page.getByRole('button', { name: s.buy }).tap();

  const receipt = page.getByTestId('receipt');
  await expect(receipt).toBeVisible();
  await expect(receipt).toContainText(s.placed);
  const orderId = await receipt.getAttribute('data-order-id');
  expect(orderId).toMatch(/^[0-9a-f-]{36}$/);

  const overflows = await page.evaluate(
    () => document.documentElement.scrollWidth > document.documentElement.clientWidth,
  );
  expect(overflows, 'no horizontal scrolling at 360 px').toBe(false);
  await page.screenshot({ path: artifact(testInfo, 'receipt-360x780'), fullPage: true });

  const stats = await orderStats(request, item.id);
  expect(stats.orders).toBe(1);
  expect(stats.stock).toBe(2);
});

test('the item list fits a 360 px screen and links to items', async ({ page, request }, testInfo) => {
  const title = `Brompton bike ${testInfo.project.name}`;
  const item = await createItem(request, { title, stock: 1 });
  await page.goto('/');
  const link = page.getByRole('link', { name: new RegExp(title) });
  await expect(link).toBeVisible();
  const overflows = await page.evaluate(
    () => document.documentElement.scrollWidth > document.documentElement.clientWidth,
  );
  expect(overflows).toBe(false);
  await page.screenshot({ path: artifact(testInfo, 'list-360x780'), fullPage: true });
  await link.click();
  await expect(page).toHaveURL(new RegExp(`/items/${item.id}$`));
});
