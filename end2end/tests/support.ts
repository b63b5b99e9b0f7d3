// Test data goes in through the API, never through SQL.
import { APIRequestContext, Page, expect } from '@playwright/test';

export interface Item {
  id: number;
  title: string;
  stock: number;
  version: number;
  max_per_buyer: number | null;
}

export async function createItem(
  request: APIRequestContext,
  fields: { title?: string; stock: number; price_cents?: number; max_per_buyer?: number },
): Promise<Item> {
  const response = await request.post('/api/admin/items', {
    headers: { Authorization: `Bearer ${process.env.ADMIN_TOKEN}` },
    data: { title: 'Film camera', price_cents: 4200, condition: 'Good', seller: 'E2E', ...fields },
  });
  expect(response.status()).toBe(201);
  return response.json();
}

/** Orders of an item as the server counts them (admin API). */
export async function orderStats(request: APIRequestContext, itemId: number) {
  const response = await request.get(`/api/admin/items/${itemId}/stats`, {
    headers: { Authorization: `Bearer ${process.env.ADMIN_TOKEN}` },
  });
  expect(response.status()).toBe(200);
  return response.json() as Promise<{ orders: number; units_ordered: number; duplicate_keys: number; stock: number }>;
}

/** The page is hydrated: the Buy panel's submit handler is live. */
export async function waitForHydration(page: Page) {
  await expect(page.locator('form.buy-panel[data-hydrated="true"]')).toHaveCount(1);
}
