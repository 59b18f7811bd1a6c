// Checks the server's chat page (src/serve/chat.html) in a real headless browser: Debian's chromium,
// driven by puppeteer-core. Starts the server on the default model, types a message, waits for the
// streamed reply, and saves a screenshot (argv[2], default /tmp/mlx-bun-chat.png). Exits 1 on failure.
//   apt-get install chromium && bun run scripts/check-chat-page.ts
import puppeteer from "puppeteer-core";
import { DEFAULT_MODEL_DIR, serve } from "../src/index.ts";

const screenshot = process.argv[2] ?? "/tmp/mlx-bun-chat.png";
const server = serve({ model: DEFAULT_MODEL_DIR, port: 0 });
const browser = await puppeteer.launch({
  executablePath: process.env["CHROMIUM"] ?? "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox"],
});
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 900, height: 500 });
  await page.goto(`${server.url}/`);
  await page.type("#input", "Tell me about ships.");
  await page.click("button");
  // Runs in the page (the DOM's types are not in this project's lib).
  await page.waitForSelector("xpath///p[@id='status'][contains(., 'chunks in') or contains(., 'error')]", {
    timeout: 60_000,
  });
  const status = await page.$eval("#status", (e) => e.textContent ?? "");
  const reply = await page.$eval("#log .assistant", (e) => e.textContent ?? "");
  await page.screenshot({ path: screenshot });
  console.log(`status: ${status}\nreply: ${JSON.stringify(reply)}\nscreenshot: ${screenshot}`);
  if (status.startsWith("error") || reply.trim() === "") throw new Error("the page got no streamed reply");
} finally {
  await browser.close();
  await server.stop();
}
