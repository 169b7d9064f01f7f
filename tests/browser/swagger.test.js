// Swagger UI at /docs in headless Chromium (Debian's package), driven as an explorer would with
// nothing but the page: the fake WeChat API's code, the WeChat login, register with the bind
// ticket, Authorize, then GET /api/v1/me. Leaves a screenshot in the cargo target dir.
const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('fs')
const os = require('os')
const path = require('path')
const puppeteer = require('puppeteer-core')

const { startServer, REPO_ROOT } = require('../../openapi/miniprogram/test/support/server')

const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium'
const TARGET_DIR = process.env.CARGO_TARGET_DIR || path.join(REPO_ROOT, 'target')
const SCREENSHOT = path.join(TARGET_DIR, 'swagger-ui.png')
const SCREENSHOT_ME = path.join(TARGET_DIR, 'swagger-ui-me.png')
const STEP_TIMEOUT_MS = 15000

let server
let browser
let page
let profileDir
// Everything the page asked for that is not the server under test: /docs must work offline.
const foreignRequests = []
const consoleErrors = []
const pageErrors = []

before(async () => {
  server = await startServer()
  profileDir = fs.mkdtempSync(path.join(os.tmpdir(), 'iotbind-chromium-'))
  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      `--user-data-dir=${profileDir}`,
    ],
  })
  page = await browser.newPage()
  await page.setViewport({ width: 1280, height: 900 })
  page.setDefaultTimeout(STEP_TIMEOUT_MS)
  await page.setRequestInterception(true)
  const origin = new URL(server.baseUrl).origin
  page.on('request', (request) => {
    const url = request.url()
    if (url.startsWith('data:') || url.startsWith(origin)) {
      request.continue()
    } else {
      foreignRequests.push(url)
      request.abort()
    }
  })
  page.on('console', (message) => {
    if (message.type() === 'error') consoleErrors.push(message.text())
  })
  page.on('pageerror', (error) => pageErrors.push(error.message))
})

after(async () => {
  if (browser) await browser.close()
  if (server) await server.stop()
  if (profileDir) fs.rmSync(profileDir, { recursive: true, force: true })
})

// Opens an operation, presses "Try it out", types `body` (if any) into its editor, executes,
// and returns what Swagger UI shows: the status and the parsed response body.
async function tryItOut(operationId, tag, body) {
  const block = `#operations-${tag}-${operationId}`
  await page.waitForSelector(block)
  const isOpen = await page.$eval(block, (el) => el.classList.contains('is-open'))
  if (!isOpen) await page.click(`${block} .opblock-summary`)
  await page.waitForSelector(`${block} .try-out__btn`)
  await page.click(`${block} .try-out__btn`)
  if (body !== undefined) {
    const editor = `${block} textarea.body-param__text`
    await page.waitForSelector(editor)
    await page.click(editor)
    await page.keyboard.down('Control')
    await page.keyboard.press('KeyA')
    await page.keyboard.up('Control')
    await page.keyboard.press('Backspace')
    await page.type(editor, JSON.stringify(body))
  }
  await page.click(`${block} .execute`)
  const status = `${block} .live-responses-table .response .response-col_status`
  await page.waitForSelector(status)
  const shown = await page.$eval(block, (el) => {
    const code = el.querySelector('.live-responses-table .response .response-col_status')
    const text = el.querySelector('.live-responses-table .response .response-col_description pre')
    return { status: code.textContent.trim(), body: text ? text.textContent : '' }
  })
  let parsed = null
  try {
    parsed = JSON.parse(shown.body)
  } catch (err) {
    // left null: the assertion below shows the raw text
  }
  return { status: Number(shown.status.replace(/\D.*$/, '')), body: parsed, raw: shown.body }
}

test('an explorer logs in from /docs alone and sees their account', async () => {
  await page.goto(`${server.baseUrl}/docs`, { waitUntil: 'networkidle0' })
  await page.waitForSelector('.opblock-tag')

  const tags = await page.$$eval('.opblock-tag', (els) => els.map((el) => el.getAttribute('data-tag')))
  assert.deepEqual(tags, ['Admin', 'Auth', 'Broker', 'Development', 'Devices', 'Me', 'Operations'])
  const development = await page.$eval('.opblock-tag-section [data-tag="Development"]', (el) => el.textContent)
  assert.match(development, /Development mode only/)
  const spec = await (await fetch(`${server.baseUrl}/openapi.json`)).json()
  const specified = Object.values(spec.paths).reduce((sum, item) => sum + Object.keys(item).length, 0)
  const operations = await page.$$eval('.opblock', (els) => els.length)
  assert.equal(operations, specified, 'every operation of the development spec is listed')

  const minted = await tryItOut('dev_wechat_codes', 'Development', { openid: 'o-swagger-explorer' })
  assert.equal(minted.status, 200, minted.raw)
  assert.equal(minted.body.openid, 'o-swagger-explorer')
  assert.match(minted.body.code, /^[A-Za-z0-9]{32}$/)

  const login = await tryItOut('auth_wechat_login', 'Auth', { code: minted.body.code })
  assert.equal(login.status, 200, login.raw)
  assert.equal(login.body.status, 'bind_required')

  const registered = await tryItOut('auth_wechat_register', 'Auth', {
    bind_ticket: login.body.bind_ticket,
    username: 'explorer',
    password: 'explorer passphrase',
    nickname: 'Explorer',
  })
  assert.equal(registered.status, 201, registered.raw)
  assert.equal(registered.body.status, 'authenticated')
  const token = registered.body.access_token

  await page.click('.auth-wrapper .authorize')
  const tokenInput = '.modal-ux input[type="text"], .modal-ux input:not([type])'
  await page.waitForSelector(tokenInput)
  await page.type(tokenInput, token)
  await page.click('.modal-ux .auth-btn-wrapper .authorize')
  await page.waitForSelector('.modal-ux .auth-btn-wrapper .btn-done')
  await page.click('.modal-ux .auth-btn-wrapper .btn-done')
  await page.waitForSelector('.modal-ux', { hidden: true })

  const me = await tryItOut('me_get', 'Me')
  assert.equal(me.status, 200, me.raw)
  assert.equal(me.body.username, 'explorer')
  assert.equal(me.body.nickname, 'Explorer')
  assert.equal(me.body.wechat_bound, true)

  fs.mkdirSync(TARGET_DIR, { recursive: true })
  await page.screenshot({ path: SCREENSHOT, fullPage: true })
  const meBlock = await page.$('#operations-Me-me_get')
  await meBlock.screenshot({ path: SCREENSHOT_ME })

  assert.deepEqual(foreignRequests, [], 'Swagger UI loads nothing from outside the server')
  assert.deepEqual(pageErrors, [], 'no script errors')
  assert.deepEqual(consoleErrors, [], 'nothing failed to load')
})
