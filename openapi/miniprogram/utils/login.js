// The login flow: wx.login() → POST /auth/wechat/login → either a session (authenticated) or a
// bind ticket (bind_required) for the bind and register pages; binding and registering with
// that ticket, starting over with a fresh wx.login() when the ticket has expired; log out.
const api = require('./api.js')
const session = require('./session.js')

const HOME = '/pages/devices/devices'
const BIND = '/pages/bind/bind'

let loggingIn = null
let launched = null

function wxLogin() {
  return new Promise(function (resolve, reject) {
    wx.login({
      success: function (res) {
        if (res && res.code) resolve(res.code)
        else reject(new api.ApiError('wx_login_failed', 0))
      },
      fail: function () { reject(new api.ApiError('wx_login_failed', 0)) },
    })
  })
}

async function exchangeCode() {
  const code = await wxLogin()
  const answer = await api.request({
    path: '/api/v1/auth/wechat/login', method: 'POST', data: { code: code }, auth: false,
  })
  if (answer.status === 'authenticated') {
    session.save(answer)
  } else {
    session.clear()
    session.saveBindTicket(answer.bind_ticket, answer.expires_in)
  }
  return answer
}

// One wx.login() at a time: a code is single use, and two logins racing would each make a
// session of their own.
function logIn() {
  if (!loggingIn) {
    loggingIn = exchangeCode().then(
      function (answer) { loggingIn = null; return answer },
      function (err) { loggingIn = null; throw err }
    )
  }
  return loggingIn
}

function goToBind() {
  wx.reLaunch({ url: BIND })
}

function goHome() {
  wx.reLaunch({ url: HOME })
}

// On launch: a stored session is used as it is (the request wrapper renews it when it stops
// working); otherwise log in with WeChat. After "log out", nothing happens until the user asks.
function launch() {
  if (session.isLoggedOut()) {
    launched = Promise.resolve({ status: 'logged_out' })
  } else if (session.get()) {
    launched = Promise.resolve({ status: 'authenticated' })
  } else {
    launched = logIn().then(function (answer) {
      if (answer.status === 'bind_required') goToBind()
      return { status: answer.status }
    })
  }
  return launched
}

// What the launch decided, for the first page, which may load before the login is done.
// Never rejects: a failed launch login is {status: 'failed', error}.
function ready() {
  const pending = launched || Promise.resolve({ status: session.get() ? 'authenticated' : 'none' })
  return pending.then(null, function (err) { return { status: 'failed', error: err } })
}

// Sends `attempt(ticket)` (bind or register) with the stored bind ticket. An expired or worn
// out ticket (401 invalid_bind_ticket) starts over with a fresh wx.login(), and the same
// attempt is made once more with the new ticket.
async function withTicket(attempt) {
  let ticket = session.bindTicket()
  if (!ticket) {
    const answer = await logIn()
    if (answer.status === 'authenticated') return answer
    ticket = answer.bind_ticket
  }
  let result
  try {
    result = await attempt(ticket)
  } catch (err) {
    if (err.code !== 'invalid_bind_ticket') throw err
    const answer = await logIn()
    // Linked meanwhile (on another phone, say): nothing left to bind.
    if (answer.status === 'authenticated') return answer
    result = await attempt(answer.bind_ticket)
  }
  session.save(result)
  return result
}

function bind(username, password) {
  return withTicket(function (ticket) {
    return api.request({
      path: '/api/v1/auth/wechat/bind',
      method: 'POST',
      data: { bind_ticket: ticket, username: username, password: password },
      auth: false,
    })
  })
}

function register(username, password, nickname) {
  const data = { username: username, password: password }
  if (nickname) data.nickname = nickname
  return withTicket(function (ticket) {
    return api.request({
      path: '/api/v1/auth/wechat/register',
      method: 'POST',
      data: Object.assign({ bind_ticket: ticket }, data),
      auth: false,
    })
  })
}

// Revokes this login's refresh tokens on the server and forgets the session here. Failing to
// reach the server still forgets it here: the user asked to leave.
async function endSession() {
  const current = session.get()
  session.clear()
  if (!current || !current.refresh_token) return
  try {
    await api.request({
      path: '/api/v1/auth/logout', method: 'POST', data: { refresh_token: current.refresh_token }, auth: false,
    })
  } catch (err) {
    console.warn('logout did not reach the server', err)
  }
}

// "Log out": the session ends, and the app stays logged out (no WeChat login on the next
// launch) until the user taps 微信登录.
async function logOut() {
  const ending = endSession()
  session.markLoggedOut()
  await ending
}

module.exports = { logIn, launch, ready, bind, register, endSession, logOut, goToBind, goHome }
