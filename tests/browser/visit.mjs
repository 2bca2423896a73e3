// One visit of the test shop in Debian's chromium, driven by playwright-core.
//
//   node visit.mjs PAGE_URL STATUS_URL [SCREENSHOT]
//
// Opens PAGE_URL (the shop, which loads @segment/analytics-next from its own
// origin and makes the five calls of a visit), keeps it open while
// analytics-next retries, until STATUS_URL answers {"done": true} or 90 s
// pass, then prints one JSON object: every request the page made, every
// answer, the console, and page errors. Requests to any other host than the
// test's are refused, so nothing can reach Segment's CDN or API.
import { chromium } from 'playwright-core';

const [pageUrl, statusUrl, screenshot] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const report = { requests: [], responses: [], console: [], errors: [], refused: [], done: false };

const browser = await chromium.launch({ executablePath, args: ['--no-sandbox'] });
try {
  const page = await browser.newPage();
  await page.route('**/*', (route) => {
    const host = new URL(route.request().url()).hostname;
    if (host === '127.0.0.1' || host === 'localhost') return route.continue();
    report.refused.push(route.request().url());
    return route.abort();
  });
  page.on('request', (r) => report.requests.push(`${r.method()} ${r.url()}`));
  page.on('response', (r) => report.responses.push(`${r.status()} ${r.request().method()} ${r.url()}`));
  page.on('console', (m) => report.console.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => report.errors.push(String(e)));
  await page.goto(pageUrl);
  const deadline = Date.now() + 90_000;
  while (Date.now() < deadline) {
    const status = await (await fetch(statusUrl)).json();
    if (status.done) {
      report.done = true;
      break;
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  report.calls = await page.evaluate(() => window.visit || null);
  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(report));
