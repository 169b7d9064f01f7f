// The one request wrapper: every call to the iotbind API goes through here. It adds the bearer
// token from storage; on 401 invalid_token it renews the session once for every request that
// is waiting (single flight) and retries each request once; it turns every failure, including
// network failures and timeouts, into an ApiError whose message a page can show as it is.
const config = require('../config.js')
const session = require('./session.js')
const errors = require('./errors.js')

// After 409 refresh_token_rotated, how long to look for the pair the winning refresh stores.
const ROTATED_WAIT_MS = 2000
const ROTATED_POLL_MS = 100

class ApiError extends Error {
  constructor(code, status, extra) {
    super(errors.messageFor(code))
    this.name = 'ApiError'
    this.code = code
    // 0 when the request never got an HTTP answer.
    this.status = status || 0
    const more = extra || {}
    this.retryAfter = more.retryAfter || null
    this.serverMessage = more.serverMessage || null
  }
}

// The page is being replaced by the login flow (bind page, or logged out): nothing to show.
function isQuiet(err) {
  return Boolean(err) && err.code === 'login_required'
}

// What a page shows for any error, an ApiError or not.
function messageOf(err) {
  if (err instanceof ApiError) return err.message
  return errors.GENERIC_MESSAGE
}

function sleep(ms) {
  return new Promise(function (resolve) { setTimeout(resolve, ms) })
}

function headerValue(headers, name) {
  if (!headers) return null
  const wanted = name.toLowerCase()
  const key = Object.keys(headers).filter(function (k) { return k.toLowerCase() === wanted })[0]
  return key === undefined ? null : headers[key]
}

function queryString(query) {
  if (!query) return ''
  const parts = Object.keys(query)
    .filter(function (key) { return query[key] !== undefined && query[key] !== null })
    .map(function (key) { return encodeURIComponent(key) + '=' + encodeURIComponent(query[key]) })
  return parts.length ? '?' + parts.join('&') : ''
}

// One HTTP exchange. Resolves with every HTTP answer, whatever its status; rejects only when
// there was none (network down, DNS, timeout), as an ApiError.
function send(options, accessToken) {
  return new Promise(function (resolve, reject) {
    const header = { 'content-type': 'application/json' }
    if (accessToken) header.Authorization = 'Bearer ' + accessToken
    const method = options.method || 'GET'
    wx.request({
      url: config.BASE_URL + options.path + queryString(options.query),
      method: method,
      // GET carries its parameters in the URL (queryString), not as wx.request's data.
      data: method === 'GET' ? undefined : options.data,
      header: header,
      timeout: options.timeout || config.REQUEST_TIMEOUT_MS,
      success: function (res) { resolve(res) },
      fail: function (res) {
        const text = (res && res.errMsg) || ''
        reject(new ApiError(/timeout|timed out/i.test(text) ? 'timeout' : 'network_error', 0))
      },
    })
  })
}

function errorCode(res) {
  const body = res && res.data
  return body && typeof body === 'object' && typeof body.error === 'string' ? body.error : null
}

function toError(res) {
  const body = res.data && typeof res.data === 'object' ? res.data : {}
  let code = errorCode(res)
  if (!code) code = res.statusCode >= 500 ? 'unavailable' : 'bad_response'
  const retryAfter = Number(headerValue(res.header, 'Retry-After'))
  return new ApiError(code, res.statusCode, {
    retryAfter: retryAfter > 0 ? retryAfter : null,
    serverMessage: typeof body.message === 'string' ? body.message : null,
  })
}

function unwrap(res) {
  if (res.statusCode >= 200 && res.statusCode < 300) {
    return res.statusCode === 204 ? null : res.data
  }
  throw toError(res)
}

// --- Session renewal (single flight) --------------------------------------------------------

let renewal = null

// Resolves with a session whose access token is not `staleAccess`: the one already stored if
// another request renewed meanwhile, else the result of the one renewal in flight.
function renewSession(staleAccess) {
  const current = session.get()
  if (current && current.access_token !== staleAccess) return Promise.resolve(current)
  if (!renewal) {
    renewal = renew(current).then(
      function (fresh) { renewal = null; return fresh },
      function (err) { renewal = null; throw err }
    )
  }
  return renewal
}

async function renew(current) {
  if (current && current.refresh_token) {
    const refreshed = await refresh(current.refresh_token)
    if (refreshed) return refreshed
  }
  return logInAgain()
}

// The new pair, or null when this refresh token is finished and only a new login will do.
// Throws when the server could not decide (network, 5xx, 429): the stored pair may still be
// good, and throwing it away would cost the user a login.
async function refresh(refreshToken) {
  const res = await send({ path: '/api/v1/auth/refresh', method: 'POST', data: { refresh_token: refreshToken } }, null)
  if (res.statusCode === 200 && res.data && res.data.access_token) {
    session.save(res.data)
    return session.get()
  }
  const code = errorCode(res)
  if (code === 'refresh_token_rotated') return pairStoredByWinner(refreshToken)
  if (res.statusCode >= 500 || res.statusCode === 429) throw toError(res)
  return null
}

// 409 refresh_token_rotated: another refresh of the same token won moments ago (another copy
// of the app, or our own earlier attempt whose answer was lost). The winner stores its pair;
// use that one. If none shows up, the winner's answer is lost to us: log in again.
async function pairStoredByWinner(spentToken) {
  const deadline = Date.now() + ROTATED_WAIT_MS
  for (;;) {
    const stored = session.get()
    if (stored && stored.refresh_token !== spentToken) return stored
    if (Date.now() >= deadline) return null
    await sleep(ROTATED_POLL_MS)
  }
}

async function logInAgain() {
  if (session.isLoggedOut()) throw new ApiError('login_required', 401)
  // Required here, not at the top: login.js uses this module to reach the API, and by the
  // time a session needs renewing both modules are loaded.
  const login = require('./login.js')
  const answer = await login.logIn()
  if (answer.status === 'authenticated') return session.get()
  // The WeChat user is no longer linked to an account: the bind page takes over.
  login.goToBind()
  throw new ApiError('login_required', 401)
}

// --- The API --------------------------------------------------------------------------------

// options: {path, method, data, query, auth (default true), timeout}. Resolves with the
// answer's body (null for 204); rejects with an ApiError.
async function request(options) {
  if (options.auth === false) return unwrap(await send(options, null))

  let current = session.get()
  if (!current) current = await renewSession(null)
  let res = await send(options, current.access_token)
  if (res.statusCode === 401 && errorCode(res) === 'invalid_token') {
    const fresh = await renewSession(current.access_token)
    res = await send(options, fresh.access_token)
  }
  return unwrap(res)
}

module.exports = { request, ApiError, isQuiet, messageOf }
