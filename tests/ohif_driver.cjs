// Drives the real OHIF viewer in headless Chromium for tests/test_web_ohif.py.
//
// Usage: node ohif_driver.cjs CACHE_DIR CHROMIUM URL STUDY_UID OUT_DIR EXPECT_JSON
// Opens the study list at URL, waits for the expected patient names, then
// opens the study in the viewer, waits for its series descriptions and for
// the viewport to draw, saving screenshots in OUT_DIR.  Prints one JSON
// object: the texts seen, the screenshot paths, and any page errors.
"use strict";
const path = require("path");
const { chromium } = require(path.join(process.argv[2], "node_modules", "playwright-core"));

const [, , , executable, url, study, outDir, expectJson] = process.argv;
const expect = JSON.parse(expectJson);
const result = { studyList: "", viewer: "", screenshots: {}, errors: [], timings: {} };

async function waitForTexts(page, texts, timeout) {
  const start = Date.now();
  for (;;) {
    const body = await page.evaluate(() => document.body.innerText);
    if (texts.every((t) => body.includes(t))) return body;
    if (Date.now() - start > timeout) return body;
    await page.waitForTimeout(250);
  }
}

(async () => {
  const browser = await chromium.launch({
    executablePath: executable,
    headless: true,
    args: ["--no-sandbox", "--enable-unsafe-swiftshader", "--use-angle=swiftshader"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    page.on("pageerror", (e) => result.errors.push(String(e)));
    let start = Date.now();
    await page.goto(url, { waitUntil: "domcontentloaded" });
    result.studyList = await waitForTexts(page, expect.names, 60000);
    result.timings.studyList = Date.now() - start;
    result.screenshots.studyList = path.join(outDir, "study-list.png");
    await page.screenshot({ path: result.screenshots.studyList });

    start = Date.now();
    await page.goto(`${url}viewer?StudyInstanceUIDs=${study}`, {
      waitUntil: "domcontentloaded",
    });
    result.viewer = await waitForTexts(page, expect.series, 90000);
    // OHIF's first-visit tour covers the viewport: skip it
    const skip = page.getByText("Skip all");
    if (await skip.count()) await skip.first().click().catch(() => {});
    // the viewport: the largest canvas on the page, once it has drawn
    const canvas = page.locator("canvas").first();
    await canvas.waitFor({ state: "visible", timeout: 60000 });
    await page.waitForTimeout(3000); // frames arrive, then the first render
    result.timings.viewer = Date.now() - start;
    result.screenshots.viewer = path.join(outDir, "viewer.png");
    await page.screenshot({ path: result.screenshots.viewer });
    const boxes = [];
    for (const c of await page.locator("canvas").all()) {
      const box = await c.boundingBox();
      if (box) boxes.push({ c, area: box.width * box.height });
    }
    boxes.sort((a, b) => b.area - a.area);
    if (boxes.length) {
      result.screenshots.viewport = path.join(outDir, "viewport.png");
      await boxes[0].c.screenshot({ path: result.screenshots.viewport });
    }
  } catch (e) {
    result.errors.push(`driver: ${e && e.stack ? e.stack : e}`);
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(result));
})();
