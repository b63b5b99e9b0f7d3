import { test, expect } from '@playwright/test';
import { artifact, createItem } from './support';

test('the admin dashboard signs in once, draws the layers and refreshes live', async ({ page, request }, testInfo) => {
  const item = await createItem(request, { title: `Dashboard camera ${testInfo.project.name}`, stock: 50 });
  await page.goto('/dashboard');
  await page.locator('input[name="token"]').fill(process.env.ADMIN_TOKEN!);
  await page.locator('form.sign-in button').click();
  await expect(page.getByTestId('dashboard-live')).toBeVisible();

  // Orders from API buyers while the page is open: the numbers move
  // without a reload.
  const before = Number(await page.getByTestId('orders-created').textContent());
  for (let n = 0; n < 5; n++) {
    const buyer = await request.post('/api/session');
    expect(buyer.status()).toBeLessThan(300);
    const order = await request.post('/api/orders', {
      headers: { 'Idempotency-Key': `dash-${testInfo.project.name}-${n}` },
      data: { item_id: item.id, qty: 1 },
    });
    expect(order.status()).toBe(201);
  }
  const url = page.url();
  await expect.poll(async () => Number(await page.getByTestId('orders-created').textContent()), { timeout: 15_000 })
    .toBeGreaterThanOrEqual(before + 5);
  expect(page.url(), 'refreshed in place').toBe(url);

  await expect(page.locator('figure.heatmap rect').first()).toBeVisible();
  await expect(page.locator('.hot-items li').first()).toContainText('Dashboard camera');
  const overflows = await page.evaluate(
    () => document.documentElement.scrollWidth > document.documentElement.clientWidth,
  );
  expect(overflows, 'the dashboard fits a phone').toBe(false);
  await page.screenshot({ path: artifact(testInfo, 'dashboard'), fullPage: true });
});
