// Drives the dashboard of a running `wsledger serve` in headless Chromium:
// connect the test client, ping, see the pong, see the connection CONNECTED in the
// table, disconnect, see it DISCONNECTED. Then, at 390, 800 and 1280 px wide,
// checks the layout from the live page (nothing wider than the viewport, no
// overlapping panels, every table header inside its panel or a horizontal
// scroller, panels at least 300 px wide where the viewport allows, tap targets at
// least 40 px high on a phone) and saves a screenshot per width.
// Usage: node dashboard.js http://127.0.0.1:PORT/ OUTPUT_DIR
const path = require('path');
const { chromium } = require('playwright-core');

const [url, outputDir] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const WIDTHS = [390, 800, 1280];

// Runs in the page: what breaks the layout at the current viewport, as sentences.
function layoutProblems() {
  const problems = [];
  const viewport = document.documentElement.clientWidth;
  const px = (value) => Math.round(value);
  if (document.documentElement.scrollWidth > viewport) {
    problems.push(`the page is ${document.documentElement.scrollWidth} px wide in a ${viewport} px viewport`);
  }
  const panels = [...document.querySelectorAll('main > section')];
  const rects = panels.map((panel) => panel.getBoundingClientRect());
  rects.forEach((a, i) => rects.slice(i + 1).forEach((b, j) => {
    const overlap = a.left < b.right - 0.5 && b.left < a.right - 0.5 && a.top < b.bottom - 0.5 && b.top < a.bottom - 0.5;
    if (overlap) problems.push(`panels ${i} and ${i + j + 1} overlap`);
  }));
  const mainStyle = getComputedStyle(document.querySelector('main'));
  const room = viewport - parseFloat(mainStyle.paddingLeft) - parseFloat(mainStyle.paddingRight);
  rects.forEach((rect, i) => {
    if (rect.width < Math.min(300, room) - 0.5) problems.push(`panel ${i} is ${px(rect.width)} px wide`);
    if (rect.right > viewport + 0.5 || rect.left < -0.5) problems.push(`panel ${i} runs outside the viewport`);
  });
  const scrollerOf = (element, panel) => {
    for (let node = element.parentElement; node && node !== panel; node = node.parentElement) {
      const overflow = getComputedStyle(node).overflowX;
      if (overflow === 'auto' || overflow === 'scroll') return node;
    }
    return null;
  };
  const inside = (inner, outer) => inner.left >= outer.left - 0.5 && inner.right <= outer.right + 0.5;
  panels.forEach((panel, i) => {
    const panelRect = panel.getBoundingClientRect();
    panel.querySelectorAll('th').forEach((header) => {
      const rect = header.getBoundingClientRect();
      if (inside(rect, panelRect)) return;
      const scroller = scrollerOf(header, panel);
      if (!scroller || !inside(scroller.getBoundingClientRect(), panelRect)) {
        problems.push(`header "${header.textContent}" of panel ${i} lies outside it, with no scroller`);
      }
    });
  });
  if (viewport < 600) {
    const targets = [...document.querySelectorAll('button, input, tbody#connections tr')];
    targets.forEach((target) => {
      const rect = target.getBoundingClientRect();
      if (rect.height > 0 && rect.height < 40 - 0.5) {
        problems.push(`tap target ${target.id || target.textContent.trim().slice(0, 20)} is ${px(rect.height)} px high`);
      }
    });
  }
  return problems;
}

(async () => {
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--no-first-run', '--disable-sync', '--disable-quic'],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
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

    const failures = [];
    for (const width of WIDTHS) {
      await page.setViewportSize({ width, height: 800 });
      await page.waitForTimeout(100);
      const problems = await page.evaluate(layoutProblems);
      problems.forEach((problem) => failures.push(`at ${width} px: ${problem}`));
      await page.screenshot({ path: path.join(outputDir, `dashboard-${width}.png`), fullPage: true });
    }
    if (failures.length > 0) throw new Error('the layout breaks:\n' + failures.join('\n'));

    await page.setViewportSize({ width: 390, height: 800 });
    // On a phone the timeline and the client still work.
    await page.click(row);
    await page.waitForSelector('#timeline li:text("Connected")');
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
