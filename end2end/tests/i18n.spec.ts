import { test, expect } from '@playwright/test';
import { createItem, strings } from './support';

test('Accept-Language picks the language and the visible switch overrides it', async ({ page, request }, testInfo) => {
  const s = strings(testInfo);
  const item = await createItem(request, { stock: 2 });
  await page.goto(`/items/${item.id}`);
  await expect(page.getByRole('button', { name: s.buy })).toBeVisible();

  await page.getByRole('link', { name: s.switchTo }).click();
  const other = s.switchTo === 'English' ? /buy now/i : /立即购买/;
  await expect(page.getByRole('button', { name: other })).toBeVisible();
  await page.reload();
  await expect(page.getByRole('button', { name: other }), 'the choice is remembered').toBeVisible();
  await expect(page.locator('html')).toHaveAttribute('lang', s.switchTo === 'English' ? 'en' : 'zh-CN');
});
