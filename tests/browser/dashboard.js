// Drives the dashboard of a running `wsledger serve` in headless Chromium:
// connect the test client, ping, see the pong, see the connection CONNECTED in the
// table, disconnect, see it DISCONNECTED. Saves a screenshot.
// Usage: node dashboard.js http://127.0.0.1:PORT/ screenshot.png
const { chromium } = require('playwright-core');

const [url, screenshot] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';

(async () => {
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--no-first-run', '--disable-sync', '--disable-quic'],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 800 } });
    page.setDefaultTimeout(15000);
    await page.goto(url);
    await page.waitForSelector('#stream-status:text("live")');
    await page.fill('#user', 'browser-user');
    await page.click('#connect');
    await page.waitForSelector('#client-status:text("connected")');
    await page.click('button.send:text("ping")');
    await page.waitForSelector('#log div:text(\'← {"type":"pong"}\')');
    await page.fill('#raw', '{"type":"dance"}');
    await page.click('#send-raw');
    await page.waitForSelector('#log div.error');
    await page.click('button.send:text("voice_start")');
    await page.waitForSelector('#log div:text("voice_started")');
    const row = 'tbody#connections tr:has(td:text("browser-user"))';
    await page.waitForSelector(row + ' td.CONNECTED');
    // Today's usage of the user, live from the projected views.
    await page.waitForSelector('tbody#usage tr:has(td:text("browser-user"))');
    await page.click(row);
    await page.waitForSelector('#timeline li:text("Connected")');
    await page.screenshot({ path: screenshot, fullPage: true });
    await page.click('#disconnect');
    await page.waitForSelector(row + ' td.DISCONNECTED');
    console.log('dashboard ok');
  } finally {
    await browser.close();
  }
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
