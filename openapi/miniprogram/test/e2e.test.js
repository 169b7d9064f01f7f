// End to end: the real app and pages, rendered by miniprogram-simulate and driven by their
// inputs and taps, against a real iotbind (fresh SQLite, free ports, development mode), with
// wx.request bridged to HTTP, wx.login to the fake WeChat API, and a small MQTT device.
const { fork } = require('child_process')
const path = require('path')
require('miniprogram-simulate')
const { Phone, waitFor, sleep } = require('./support/harness')
const { startServer } = require('./support/server')
const bridge = require('./support/bridge')

const config = require('../config.js')

const SESSION_KEY = 'iotbind.session'

let server
const devices = []

beforeAll(async () => {
  server = await startServer()
  config.BASE_URL = server.baseUrl
}, 90000)

afterAll(async () => {
  devices.forEach((child) => child.kill())
  if (server) await server.stop()
})

function phoneFor(openid) {
  return new Phone({ request: bridge.request, login: bridge.login(server.baseUrl, () => openid) })
}

// Starts the test's MQTT device and resolves once it is online; `commands` collects what the
// device receives.
function startDevice(credentials) {
  const child = fork(path.join(__dirname, 'support/mqtt-device.js'), [
    server.mqttUrl, credentials.mqtt_username, credentials.mqtt_password,
  ], { stdio: 'inherit' })
  devices.push(child)
  child.commands = []
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the device did not come online within 15 s')), 15000)
    child.on('message', (message) => {
      if (message.command) child.commands.push(message.command)
      if (message.error) { clearTimeout(timer); reject(new Error(`device: ${message.error}`)) }
      if (message.ready) { clearTimeout(timer); resolve(child) }
    })
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`the device exited with ${code}`)) })
  })
}

test('a new WeChat user registers, claims a device by its QR code, switches its relay, and logs out', async () => {
  const [device] = server.provision(1)
  const phone = phoneFor('o-e2e-alice')

  // First launch: WeChat knows this user, iotbind does not → the bind page.
  phone.launch()
  const bind = await phone.on('/pages/bind/bind')
  expect(bind.text()).toContain('绑定已有账号')

  bind.tap('#to-register')
  const register = await phone.on('/pages/register/register')
  expect(register.text('#username-rules')).toContain('3–32 位')
  register.type('#username', 'alice')
  register.type('#password', 'alice passphrase')
  register.type('#password2', 'alice passphrase')
  register.type('#nickname', 'Alice')
  register.tap('#submit')

  // Registered and logged in: home, with no device yet and a way to claim one.
  let home = await phone.on('/pages/devices/devices')
  await home.waitForText('#empty', '还没有设备')
  expect(phone.storage[SESSION_KEY].user.username).toBe('alice')

  home.tap('#claim')
  const claim = await phone.on('/pages/claim/claim')
  phone.scanResult = device.claim_uri
  claim.tap('#scan')
  await waitFor(() => claim.data.serial === device.serial, 'the scanned serial in the form')
  expect(claim.data.claimCode).toBe(device.claim_code)
  claim.type('#name', '客厅')
  claim.tap('#submit')

  // Back on the list, which reloads when shown.
  home = await phone.on('/pages/devices/devices')
  await home.waitForText('#device-list', '客厅')
  expect(home.text('#device-list')).toContain('离线')
  expect(home.text('#device-list')).toContain('从未上线')

  // The device comes online; a pull-down shows it.
  const firmware = await startDevice(device)
  await waitFor(async () => {
    await home.lifecycle('onPullDownRefresh')
    return home.text('#device-list').includes('在线 ·') && !home.text('#device-list').includes('离线')
  }, 'the device online after a pull-down', 15000, () => home.text())
  expect(home.text('#device-list')).toContain('最后上报')

  home.tap('.device')
  const page = await phone.on('/pages/device/device')
  await page.waitForText('#title', '客厅')
  await page.waitForText('#latest', 'temperature')
  expect(page.text('#latest')).toContain('21.5')
  expect(page.data.relayOn).toBe(false)

  // The relay: a command with wait=true, answered by the device.
  page.toggle('#relay', true)
  await page.waitForText('#command-status', '继电器已打开', 15000)
  expect(page.data.relayOn).toBe(true)
  expect(firmware.commands.map((c) => [c.name, c.params])).toEqual([['set_relay', { on: true }]])

  // The device reported the new state; the recent telemetry shows it after a refresh.
  await waitFor(async () => {
    await page.lifecycle('onPullDownRefresh')
    return page.text('#telemetry').includes('relay 开')
  }, 'the relay on in the recent telemetry', 10000, () => page.text())
  expect(page.text('#telemetry')).toContain('temperature 21.5')

  page.type('#rename', '卧室')
  page.tap('#save-name')
  await page.waitForText('#rename-status', '已保存')
  expect(page.text('#title')).toBe('卧室')

  // The account tab, then log out.
  wx.switchTab({ url: '/pages/me/me' })
  const me = await phone.on('/pages/me/me')
  await me.waitForText('#display-name', 'Alice')
  expect(me.text('#username')).toContain('alice')
  expect(me.text('#username')).toContain('已绑定微信')
  const refreshToken = phone.storage[SESSION_KEY].refresh_token

  me.tap('#logout')
  home = await phone.on('/pages/devices/devices')
  await home.waitForText('#logged-out', '你已退出登录')
  expect(phone.storage[SESSION_KEY]).toBeUndefined()
  // The server revoked that login: its refresh token no longer works.
  const refreshed = await bridge.call(server.baseUrl, 'POST', '/api/v1/auth/refresh', { refresh_token: refreshToken })
  expect([refreshed.statusCode, refreshed.data.error]).toEqual([401, 'invalid_refresh_token'])

  // Launched again after logging out, the app waits for the user to log in.
  phone.launch()
  home = await phone.on('/pages/devices/devices')
  await home.waitForText('#logged-out', '微信登录')
  home.tap('#login')
  await home.waitForText('#device-list', '卧室')

  expect(phone.failures).toEqual([])
}, 120000)

test('a second WeChat user binds to an existing account, after a wrong password shown in Chinese', async () => {
  server.createUser('carol', 'carol passphrase')
  const phone = phoneFor('o-e2e-carol')

  phone.launch()
  const bind = await phone.on('/pages/bind/bind')
  bind.type('#username', 'carol')
  bind.type('#password', 'not the passphrase')
  bind.tap('#submit')
  await bind.waitForText('#error', '用户名或密码错误')
  expect(phone.current().route).toBe('/pages/bind/bind')

  bind.type('#password', 'carol passphrase')
  bind.tap('#submit')
  const home = await phone.on('/pages/devices/devices')
  await home.waitForText('#empty', '还没有设备')

  wx.switchTab({ url: '/pages/me/me' })
  const me = await phone.on('/pages/me/me')
  await me.waitForText('#username', 'carol')
  expect(me.text('#username')).toContain('已绑定微信')

  // The next launch of this phone goes straight in: the WeChat user is linked now.
  const next = phoneFor('o-e2e-carol')
  next.launch()
  const again = await next.on('/pages/devices/devices')
  await again.waitForText('#empty', '还没有设备')
  expect(next.current().route).toBe('/pages/devices/devices')

  expect(phone.failures).toEqual([])
  expect(next.failures).toEqual([])
}, 60000)
