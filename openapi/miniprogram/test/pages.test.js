// The pages against a scripted server, for what a real server will not do on cue: a lockout
// with Retry-After, a bind ticket that expires mid-form, a device that rejects a command or
// never answers, a QR code that is not a device label.
require('miniprogram-simulate')
const { Phone, waitFor, sleep } = require('./support/harness')
const { scriptedServer, authenticated, error } = require('./support/scripted-wx')
const { parseClaimUri } = require('../utils/claim-uri.js')

const SESSION_KEY = 'iotbind.session'
const TICKET_KEY = 'iotbind.bindTicket'

function phoneWith(server, storage) {
  const phone = new Phone({ request: server.request, login: server.login })
  Object.assign(phone.storage, storage || {})
  return phone
}

const ticket = (value) => ({ [TICKET_KEY]: { ticket: value, expires_at: Date.now() + 600000 } })
const signedIn = { [SESSION_KEY]: { access_token: 'a1', refresh_token: 'r1' } }

const DEVICE = {
  id: 'd1', serial: 'SN-1', name: '客厅', model: 'thermo-2', online: true,
  last_seen_at: new Date().toISOString(), claimed_at: new Date().toISOString(),
  latest: { ts: new Date().toISOString(), values: { relay: false, temperature: 20 } },
}

function deviceServer(commandAnswer) {
  return scriptedServer((call) => {
    if (call.path === '/api/v1/devices/d1') return { statusCode: 200, data: DEVICE }
    if (call.path.startsWith('/api/v1/devices/d1/telemetry')) return { statusCode: 200, data: { items: [], next_cursor: null } }
    if (call.path === '/api/v1/devices/d1/commands') return commandAnswer(call)
    return error(404, 'not_found')
  })
}

describe('the bind page', () => {
  test('a lockout shows its message and counts Retry-After down, with the button held back', async () => {
    const server = scriptedServer(() => error(429, 'too_many_attempts', { 'Retry-After': '3' }))
    const phone = phoneWith(server, ticket('t1'))
    const page = phone.open('/pages/bind/bind')

    page.type('#username', 'alice')
    page.type('#password', 'wrong again')
    page.tap('#submit')

    await page.waitForText('#error', '尝试次数过多，请稍后再试')
    expect(page.text('#countdown')).toBe('请在 3 秒后重试')
    page.type('#password', 'the right one')
    page.tap('#submit')
    await page.waitForText('#countdown', '请在 2 秒后重试', 2500)
    expect(server.calls).toHaveLength(1)
    phone.closeAll()
  })

  test('an expired bind ticket starts over with a fresh wx.login() and the bind goes through', async () => {
    const server = scriptedServer((call) => {
      if (call.path === '/api/v1/auth/wechat/bind' && call.data.bind_ticket === 'old') return error(401, 'invalid_bind_ticket')
      if (call.path === '/api/v1/auth/wechat/login') return { statusCode: 200, data: { status: 'bind_required', bind_ticket: 'new', expires_in: 600 } }
      if (call.path === '/api/v1/auth/wechat/bind') return { statusCode: 200, data: authenticated('a1', 'r1') }
      return { statusCode: 200, data: { items: [] } }
    })
    const phone = phoneWith(server, ticket('old'))
    const page = phone.open('/pages/bind/bind')

    page.type('#username', 'alice')
    page.type('#password', 'alice passphrase')
    page.tap('#submit')

    await phone.on('/pages/devices/devices')
    expect(server.logins).toEqual(['code-1'])
    const binds = server.calls.filter((c) => c.path === '/api/v1/auth/wechat/bind').map((c) => c.data.bind_ticket)
    expect(binds).toEqual(['old', 'new'])
    expect(phone.storage[SESSION_KEY]).toMatchObject({ access_token: 'a1' })
    expect(phone.storage[TICKET_KEY]).toBeUndefined()
  })
})

describe('the register page', () => {
  test('passwords that differ are caught before anything is sent', async () => {
    const server = scriptedServer(() => error(500, 'internal'))
    const phone = phoneWith(server, ticket('t1'))
    const page = phone.open('/pages/register/register')

    page.type('#username', 'bob')
    page.type('#password', 'bob passphrase')
    page.type('#password2', 'bob passphrose')
    page.tap('#submit')

    await page.waitForText('#error', '两次输入的密码不一致')
    expect(server.calls).toHaveLength(0)
  })

  test('a taken username and a weak password are answered in place', async () => {
    const answers = [error(409, 'username_taken'), error(422, 'weak_password')]
    const server = scriptedServer(() => answers.shift())
    const phone = phoneWith(server, ticket('t1'))
    const page = phone.open('/pages/register/register')

    page.type('#username', 'alice')
    page.type('#password', '12345678')
    page.type('#password2', '12345678')
    page.tap('#submit')
    await page.waitForText('#error', '用户名已被占用')
    page.tap('#submit')
    await page.waitForText('#error', '密码太弱')
    expect(phone.current().route).toBe('/pages/register/register')
  })
})

describe('the claim page', () => {
  test('a QR code that is not a device label says so and fills nothing in', async () => {
    const phone = phoneWith(scriptedServer(() => error(500, 'internal')), signedIn)
    phone.scanResult = 'https://example.com/not-a-label'
    const page = phone.open('/pages/claim/claim')

    page.tap('#scan')

    await page.waitForText('#error', '这不是设备标签上的二维码')
    expect(page.data.serial).toBe('')
  })

  test('a wrong serial or code shows the claim_failed message', async () => {
    const server = scriptedServer(() => error(404, 'claim_failed'))
    const phone = phoneWith(server, signedIn)
    const page = phone.open('/pages/claim/claim')

    page.type('#serial', 'SN-1')
    page.type('#claim-code', 'WRONG')
    page.tap('#submit')

    await page.waitForText('#error', '序列号或认领码不正确')
    expect(server.calls[0].data).toEqual({ serial: 'SN-1', claim_code: 'WRONG' })
  })
})

describe('the device page', () => {
  test('a relay command that times out says so and puts the switch back', async () => {
    const server = deviceServer((call) => ({ statusCode: 200, data: { id: 'c1', status: 'timed_out', name: 'set_relay', params: call.data.params, result: null, error: null } }))
    const phone = phoneWith(server, signedIn)
    const page = phone.open('/pages/device/device?id=d1')
    await page.waitForText('#title', '客厅')

    page.toggle('#relay', true)

    await page.waitForText('#command-status', '设备未响应，指令已超时')
    expect(page.data.relayOn).toBe(false)
    const sent = server.calls.find((c) => c.path === '/api/v1/devices/d1/commands')
    expect(sent.data).toEqual({ name: 'set_relay', params: { on: true }, wait: true, timeout_ms: 5000 })
  })

  test('a command the device rejects shows its reason', async () => {
    const server = deviceServer(() => ({ statusCode: 200, data: { id: 'c1', status: 'rejected', error: 'relay locked by a schedule', result: null } }))
    const phone = phoneWith(server, signedIn)
    const page = phone.open('/pages/device/device?id=d1')
    await page.waitForText('#title', '客厅')

    page.toggle('#relay', true)

    await page.waitForText('#command-status', '设备拒绝了指令：relay locked by a schedule')
    expect(page.data.relayOn).toBe(false)
  })

  test('removing a device asks first, and a cancelled confirmation removes nothing', async () => {
    const server = deviceServer(() => error(500, 'internal'))
    const phone = phoneWith(server, signedIn)
    phone.confirmModals = false
    const page = phone.open('/pages/device/device?id=d1')
    await page.waitForText('#title', '客厅')

    page.tap('#unclaim')
    await waitFor(() => phone.modals.length === 1, 'the confirmation')
    await sleep(20)

    expect(server.calls.filter((c) => c.method === 'DELETE')).toHaveLength(0)
  })
})

describe('the label QR code', () => {
  test('a claim_uri gives its serial and claim code', () => {
    expect(parseClaimUri('iotbind:claim?serial=SN-0001&code=ABCD%2BEF')).toEqual({ serial: 'SN-0001', claimCode: 'ABCD+EF' })
  })

  test('anything else, or a label missing a part, is not a claim', () => {
    expect(parseClaimUri('https://example.com/?serial=1&code=2')).toBeNull()
    expect(parseClaimUri('iotbind:claim?serial=SN-0001')).toBeNull()
    expect(parseClaimUri(undefined)).toBeNull()
  })
})
