// Headless check of the page: Debian's Chromium with a fake camera that plays a .y4m file,
// driven by playwright-core (no browser download: it launches /usr/bin/chromium).
//
//   node apps/web/check.mjs --url http://127.0.0.1:8000/ --video clip.y4m --out DIR [--seconds 10]
//
// Waits for the page's running state, counts frames over --seconds, takes a screenshot per effect
// (DIR/blur.png, DIR/swap.png) and prints one JSON object on stdout: the state, frames/s over
// the window, the mean person fraction over the window, the page's last ksegStats and any
// console errors. Used by tests/apps/test_web.py.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";

const { values: opt } = parseArgs({
  options: {
    url: { type: "string" },
    video: { type: "string" },
    out: { type: "string" },
    seconds: { type: "string", default: "10" },
    chromium: { type: "string", default: "/usr/bin/chromium" },
    width: { type: "string", default: "720" },
    height: { type: "string", default: "640" },
  },
});
if (!opt.url || !opt.video || !opt.out) {
  console.error("usage: node check.mjs --url URL --video clip.y4m --out DIR [--seconds 10]");
  process.exit(2);
}

const profile = mkdtempSync(join(tmpdir(), "kseg-chromium-"));
const report = { state: null, error: null, consoleErrors: [] };
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: opt.chromium,
    headless: true,
    viewport: { width: Number(opt.width), height: Number(opt.height) },
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
      `--use-file-for-fake-video-capture=${opt.video}`,
    ],
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("console", (m) => { if (m.type() === "error") report.consoleErrors.push(m.text()); });
  page.on("pageerror", (e) => report.consoleErrors.push(String(e)));

  await page.goto(opt.url);
  await page.waitForFunction(() => document.body.dataset.state !== "loading", null, { timeout: 120_000 });
  report.state = await page.evaluate(() => document.body.dataset.state);
  report.error = await page.evaluate(() => document.body.dataset.error ?? null);
  if (report.state === "running") {
    // warm-up: the first frames include compiling and allocating
    await page.waitForFunction(() => window.ksegStats.frames >= 10, null, { timeout: 60_000 });
    const read = () => page.evaluate(() => ({ ...window.ksegStats, now: performance.now() }));
    const a = await read();
    await page.waitForTimeout(Number(opt.seconds) * 1000);
    const b = await read();
    const frames = b.frames - a.frames;
    report.frames = frames;
    report.seconds = (b.now - a.now) / 1000;
    report.fps = frames / report.seconds;
    report.meanPersonFraction = frames ? (b.personFractionSum - a.personFractionSum) / frames : null;
    report.stats = b;
    for (const effect of ["blur", "swap"]) {
      if ((await page.evaluate(() => window.ksegStats.effect)) !== effect) await page.click("#effect");
      const n = await page.evaluate(() => window.ksegStats.frames);
      await page.waitForFunction((n0) => window.ksegStats.frames >= n0 + 3, n, { timeout: 30_000 });
      await page.screenshot({ path: join(opt.out, `${effect}.png`), fullPage: true });
    }
  } else {
    await page.screenshot({ path: join(opt.out, "error.png") });
  }
} catch (err) {
  report.error = report.error ?? String(err.message ?? err);
} finally {
  if (context) await context.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(report));
