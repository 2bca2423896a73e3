// The journey map (`journeys report`) in Debian's chromium, driven by playwright-core.
//
//   node report.mjs PAGE_FILE SHOT_DIR
//
// Opens the one-file page from disk with every request refused (it must need no network),
// then: reads what each chart drew (its data-points) and the attribution by channel under
// the linear, first-touch and last-touch models (switching the page's model select), opens
// the first account linked from "accounts to call today" (or the open alerts), reads its
// page, comes back, opens it again from the header's "open account" box, and prints one
// JSON object. Screenshots of the map, its attribution panel and the account page go to
// SHOT_DIR.
import { chromium } from 'playwright-core';
import { pathToFileURL } from 'node:url';

const [pagePath, shotDir] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const report = { console: [], errors: [], refused: [], models: {} };

const browser = await chromium.launch({
  executablePath,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  await page.route('**/*', (route) => {
    if (route.request().url().startsWith('file:')) return route.continue();
    report.refused.push(route.request().url());
    return route.abort();
  });
  page.on('console', (m) => report.console.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => report.errors.push(String(e)));
  await page.goto(pathToFileURL(pagePath).href);
  // Ready, or broken: an error the page counted stops the wait at once.
  await page.waitForFunction(
    () => document.body.getAttribute('data-ready') === '1' || (window.journeysErrors || []).length > 0,
    null,
    { timeout: 120_000 },
  );
  report.pageErrors = await page.evaluate(() => window.journeysErrors);
  if (!report.pageErrors.length) await explore(page);
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(report));

/** The map's panels, the model switch, an account page and the way back. */
async function explore(page) {
  report.points = await page.evaluate(() =>
    Object.fromEntries([...document.querySelectorAll('[data-points]')].map((n) => [n.id, Number(n.dataset.points)])),
  );
  report.pyramid = await page.evaluate(() => JSON.parse(document.getElementById('pyramid').dataset.tiers || 'null'));
  report.tocall = await page.evaluate(() => Number(document.getElementById('tocall').dataset.rows || 0));
  report.text = await page.evaluate(() => document.querySelector('main').innerText);
  await page.screenshot({ path: `${shotDir}/map.png`, fullPage: true });
  const attribution = await page.$('#attribution');
  if (attribution) await attribution.screenshot({ path: `${shotDir}/attribution.png` });
  for (const model of ['first_touch', 'last_touch', 'linear']) {
    await page.selectOption('#model', model);
    report.models[model] = await page.evaluate(() => ({
      channel: JSON.parse(document.getElementById('attrchanneltable').dataset.summary || '{}'),
      campaign: JSON.parse(document.getElementById('attrcampaigntable').dataset.summary || '{}'),
      hash: location.hash,
    }));
  }
  const link = (await page.$('#tocall a.acct')) || (await page.$('#alerts a.acct'));
  if (link) {
    report.clicked = await link.innerText();
    await link.click();
    await page.waitForSelector(`#account[data-account="${report.clicked}"]`, { timeout: 30_000 });
    await page.waitForSelector('body[data-ready="1"]');
    report.account = await page.evaluate(() => ({
      hash: location.hash,
      visible: getComputedStyle(document.getElementById('account')).display !== 'none',
      mapHidden: getComputedStyle(document.querySelector('main')).display === 'none',
      text: document.getElementById('account').innerText,
      timeline: Number(document.getElementById('acctimeline').dataset.points || 0),
    }));
    await page.screenshot({ path: `${shotDir}/account.png`, fullPage: true });
    await page.click('#back');
    await page.waitForFunction(() => !document.body.classList.contains('on-account'));
    await page.waitForSelector('body[data-ready="1"]');
    report.back = await page.evaluate(() => getComputedStyle(document.querySelector('main')).display !== 'none');
    // The header's "open account" box leads to the same page.
    await page.fill('#find', report.clicked);
    await page.dispatchEvent('#find', 'change');
    await page.waitForSelector(`#account[data-account="${report.clicked}"]`, { timeout: 30_000 });
    report.found = await page.evaluate(() => document.body.classList.contains('on-account'));
  }
  report.pageErrors = await page.evaluate(() => window.journeysErrors);
}
