// The request wrapper (utils/api.js) against a scripted server: the bearer token, the single
// refresh shared by concurrent requests, refresh_token_rotated, logging in again when the
// refresh fails, and the Chinese message of every error code.
const fs = require('fs')
const path = require('path')
require('miniprogram-simulate') // installs the global wx the app's modules call
const { Phone, sleep } = require('./support/harness')
const { scriptedServer, authenticated, error } = require('./support/scripted-wx')

const api = require('../utils/api.js')
const errors = require('../utils/errors.js')
const session = require('../utils/session.js')

const SESSION_KEY = 'iotbind.session'

function phoneWith(server, stored) {
  const phone = new Phone({ request: server.request, login: server.login })
  if (stored) phone.storage[SESSION_KEY] = stored
  return phone
}

function devicesAnswer(call) {
  return { statusCode: 200, data: { items: [{ id: 'd1', asked_with: call.authorization }] } }
}

describe('the request wrapper', () => {
  test('sends the stored access token as a bearer token', async () => {
    const server = scriptedServer((call) => devicesAnswer(call))
    phoneWith(server, { access_token: 'a1', refresh_token: 'r1' })

    const answer = await api.request({ path: '/api/v1/devices' })

    expect(answer.items[0].asked_with).toBe('Bearer a1')
    expect(server.calls.map((c) => c.path)).toEqual(['/api/v1/devices'])
  })

  test('three requests on an expired token cause exactly one refresh, and each is retried once with the new token', async () => {
    const server = scriptedServer(async (call) => {
      if (call.path === '/api/v1/auth/refresh') {
        await sleep(50) // the other requests' 401s arrive while this is in flight
        return { statusCode: 200, data: authenticated('a2', 'r2') }
      }
      if (call.authorization === 'Bearer a1') return error(401, 'invalid_token')
      return devicesAnswer(call)
    })
    const phone = phoneWith(server, { access_token: 'a1', refresh_token: 'r1' })

    const answers = await Promise.all([
      api.request({ path: '/api/v1/devices' }),
      api.request({ path: '/api/v1/devices' }),
      api.request({ path: '/api/v1/devices' }),
    ])

    const refreshes = server.calls.filter((c) => c.path === '/api/v1/auth/refresh')
    expect(refreshes).toHaveLength(1)
    expect(refreshes[0].data).toEqual({ refresh_token: 'r1' })
    expect(answers.map((a) => a.items[0].asked_with)).toEqual(['Bearer a2', 'Bearer a2', 'Bearer a2'])
    expect(server.calls.filter((c) => c.path === '/api/v1/devices')).toHaveLength(6)
    expect(phone.storage[SESSION_KEY]).toMatchObject({ access_token: 'a2', refresh_token: 'r2' })
    expect(server.logins).toHaveLength(0)
  })

  test('a request whose 401 arrives after the refresh is done uses the new token without refreshing again', async () => {
    let slowOnes = 0
    const server = scriptedServer(async (call) => {
      if (call.path === '/api/v1/auth/refresh') return { statusCode: 200, data: authenticated('a2', 'r2') }
      if (call.authorization === 'Bearer a1') {
        // The second request's answer is slow: the first one has refreshed by then.
        if (call.path === '/api/v1/me' && slowOnes++ === 0) await sleep(100)
        return error(401, 'invalid_token')
      }
      return { statusCode: 200, data: { path: call.path, asked_with: call.authorization } }
    })
    phoneWith(server, { access_token: 'a1', refresh_token: 'r1' })

    const [devices, me] = await Promise.all([
      api.request({ path: '/api/v1/devices' }),
      api.request({ path: '/api/v1/me' }),
    ])

    expect(devices.asked_with).toBe('Bearer a2')
    expect(me.asked_with).toBe('Bearer a2')
    expect(server.calls.filter((c) => c.path === '/api/v1/auth/refresh')).toHaveLength(1)
  })

  test('409 refresh_token_rotated takes the pair that the winning refresh stored', async () => {
    let phone
    const server = scriptedServer(async (call) => {
      if (call.path === '/api/v1/auth/refresh') {
        // Another copy of the app won the refresh of r1 and stores its new pair.
        setTimeout(() => {
          phone.storage[SESSION_KEY] = { access_token: 'winner', refresh_token: 'r-winner' }
        }, 30)
        return error(409, 'refresh_token_rotated')
      }
      if (call.authorization === 'Bearer a1') return error(401, 'invalid_token')
      return devicesAnswer(call)
    })
    phone = phoneWith(server, { access_token: 'a1', refresh_token: 'r1' })

    const answer = await api.request({ path: '/api/v1/devices' })

    expect(answer.items[0].asked_with).toBe('Bearer winner')
    expect(server.logins).toHaveLength(0)
    expect(phone.storage[SESSION_KEY].refresh_token).toBe('r-winner')
  })

  test('409 refresh_token_rotated with no winning pair ever stored logs in again with WeChat', async () => {
    const server = scriptedServer(async (call) => {
      if (call.path === '/api/v1/auth/refresh') return error(409, 'refresh_token_rotated')
      if (call.path === '/api/v1/auth/wechat/login') return { statusCode: 200, data: authenticated('a-login', 'r-login') }
      if (call.authorization === 'Bearer a1') return error(401, 'invalid_token')
      return devicesAnswer(call)
    })
    phoneWith(server, { access_token: 'a1', refresh_token: 'r1' })

    const answer = await api.request({ path: '/api/v1/devices' })

    expect(answer.items[0].asked_with).toBe('Bearer a-login')
    expect(server.logins).toEqual(['code-1'])
  })

  test('a failed refresh leads to a fresh wx.login() and the WeChat login, then the request is retried', async () => {
    const server = scriptedServer(async (call) => {
      if (call.path === '/api/v1/auth/refresh') return error(401, 'refresh_token_reused')
      if (call.path === '/api/v1/auth/wechat/login') return { statusCode: 200, data: authenticated('a-login', 'r-login') }
      if (call.authorization === 'Bearer a1') return error(401, 'invalid_token')
      return devicesAnswer(call)
    })
    const phone = phoneWith(server, { access_token: 'a1', refresh_token: 'r1' })

    const answer = await api.request({ path: '/api/v1/devices' })

    expect(answer.items[0].asked_with).toBe('Bearer a-login')
    expect(server.logins).toEqual(['code-1'])
    const login = server.calls.find((c) => c.path === '/api/v1/auth/wechat/login')
    expect(login.data).toEqual({ code: 'code-1' })
    expect(login.authorization).toBeNull()
    expect(phone.storage[SESSION_KEY]).toMatchObject({ access_token: 'a-login', refresh_token: 'r-login' })
  })

  test('when the WeChat user is no longer linked, a failed refresh opens the bind page and the request ends quietly', async () => {
    const server = scriptedServer(async (call) => {
      if (call.path === '/api/v1/auth/refresh') return error(401, 'invalid_refresh_token')
      if (call.path === '/api/v1/auth/wechat/login') {
        return { statusCode: 200, data: { status: 'bind_required', bind_ticket: 't1', expires_in: 600 } }
      }
      return error(401, 'invalid_token')
    })
    const phone = phoneWith(server, { access_token: 'a1', refresh_token: 'r1' })

    const failure = await api.request({ path: '/api/v1/devices' }).catch((err) => err)

    expect(failure.code).toBe('login_required')
    expect(api.isQuiet(failure)).toBe(true)
    expect(phone.current().route).toBe('/pages/bind/bind')
    expect(session.bindTicket()).toBe('t1')
    expect(session.get()).toBeNull()
  })

  test('a refresh that cannot reach the server keeps the stored pair and logs nobody in', async () => {
    const server = scriptedServer(async (call) => {
      if (call.path === '/api/v1/auth/refresh') return { fail: 'request:fail net::ERR_INTERNET_DISCONNECTED' }
      return error(401, 'invalid_token')
    })
    const phone = phoneWith(server, { access_token: 'a1', refresh_token: 'r1' })

    const failure = await api.request({ path: '/api/v1/devices' }).catch((err) => err)

    expect(failure.code).toBe('network_error')
    expect(failure.message).toBe('网络连接失败，请检查网络后重试')
    expect(server.logins).toHaveLength(0)
    expect(phone.storage[SESSION_KEY]).toMatchObject({ access_token: 'a1', refresh_token: 'r1' })
  })

  test('an error answer becomes an ApiError with its Chinese message, status and Retry-After', async () => {
    const server = scriptedServer(() => error(429, 'too_many_attempts', { 'retry-after': '900' }))
    phoneWith(server, { access_token: 'a1', refresh_token: 'r1' })

    const failure = await api.request({ path: '/api/v1/devices/claim', method: 'POST', data: {} }).catch((err) => err)

    expect(failure).toBeInstanceOf(api.ApiError)
    expect(failure.code).toBe('too_many_attempts')
    expect(failure.status).toBe(429)
    expect(failure.retryAfter).toBe(900)
    expect(failure.message).toBe('尝试次数过多，请稍后再试')
    expect(failure.serverMessage).toBe('server says too_many_attempts')
  })

  test('a timeout and a network failure reject with their own messages', async () => {
    const answers = [{ fail: 'request:fail timeout' }, { fail: 'request:fail net::ERR_CONNECTION_REFUSED' }]
    const server = scriptedServer(() => answers.shift())
    phoneWith(server, { access_token: 'a1', refresh_token: 'r1' })

    const timedOut = await api.request({ path: '/api/v1/me' }).catch((err) => err)
    const refused = await api.request({ path: '/api/v1/me' }).catch((err) => err)

    expect([timedOut.code, timedOut.message]).toEqual(['timeout', '网络超时，请稍后重试'])
    expect([refused.code, refused.message]).toEqual(['network_error', '网络连接失败，请检查网络后重试'])
  })

  test('a 5xx without an error body reads as the service being unavailable', async () => {
    const server = scriptedServer(() => ({ statusCode: 502, data: '<html>Bad Gateway</html>' }))
    phoneWith(server, { access_token: 'a1', refresh_token: 'r1' })

    const failure = await api.request({ path: '/api/v1/me' }).catch((err) => err)

    expect([failure.code, failure.status, failure.message]).toEqual(['unavailable', 502, '服务暂时不可用，请稍后再试'])
  })

  test('query parameters go into the URL of a GET, and a 204 resolves to null', async () => {
    const server = scriptedServer((call) => (call.method === 'DELETE' ? { statusCode: 204 } : { statusCode: 200, data: { items: [] } }))
    phoneWith(server, { access_token: 'a1', refresh_token: 'r1' })

    await api.request({ path: '/api/v1/devices/d1/telemetry', query: { limit: 10, cursor: undefined } })
    const deleted = await api.request({ path: '/api/v1/devices/d1', method: 'DELETE' })

    expect(server.calls[0].url).toBe('http://127.0.0.1:8080/api/v1/devices/d1/telemetry?limit=10')
    expect(server.calls[0].data).toBeUndefined()
    expect(deleted).toBeNull()
  })
})

describe('the error messages', () => {
  // Every code the committed spec documents for an error answer: the quoted words before a
  // description's first colon ("`a` or `b`: when…"); after it come field names.
  function documentedCodes() {
    const spec = JSON.parse(fs.readFileSync(path.resolve(__dirname, '../../openapi.json'), 'utf8'))
    const codes = new Set()
    Object.values(spec.paths).forEach((operations) => {
      Object.values(operations).forEach((operation) => {
        Object.entries(operation.responses).forEach(([status, response]) => {
          if (Number(status) < 400) return
          const found = (response.description || '').split(':')[0].match(/`[a-z_]+`/g) || []
          found.forEach((quoted) => codes.add(quoted.slice(1, -1)))
        })
      })
    })
    return codes
  }

  // The generic codes any operation may answer, which not every operation's description names.
  const GENERIC_CODES = [
    'invalid_request', 'not_found', 'method_not_allowed', 'payload_too_large', 'request_timeout',
    'too_many_attempts', 'unavailable', 'internal', 'invalid_token', 'broker_unavailable',
  ]

  test('every error code the API documents has its own message in Simplified Chinese', () => {
    const codes = new Set([...documentedCodes(), ...GENERIC_CODES])
    expect(codes.size).toBeGreaterThan(35)
    const missing = [...codes].filter((code) => !Object.prototype.hasOwnProperty.call(errors.MESSAGES, code))
    expect(missing).toEqual([])
    codes.forEach((code) => {
      expect(errors.messageFor(code)).toMatch(/[\u4e00-\u9fff]/)
      expect(errors.messageFor(code)).not.toBe(errors.GENERIC_MESSAGE)
    })
  })

  test('an unknown code gets the generic message', () => {
    expect(errors.messageFor('something_new')).toBe('出错了，请稍后再试')
    expect(errors.messageFor('constructor')).toBe('出错了，请稍后再试')
  })
})
