// A scripted server for unit tests: wx.request answered by a function of the request, every
// request recorded, and wx.login handing out numbered codes.
function scriptedServer(answer) {
  const calls = []
  const logins = []

  function request(options) {
    const call = {
      method: options.method || 'GET',
      url: options.url,
      path: options.url.replace(/^https?:\/\/[^/]+/, ''),
      data: options.data,
      authorization: (options.header && options.header.Authorization) || null,
    }
    calls.push(call)
    Promise.resolve()
      .then(() => answer(call, calls))
      .then((res) => {
        if (res && res.fail) {
          options.fail && options.fail({ errMsg: res.fail })
          return
        }
        options.success && options.success({
          statusCode: res.statusCode,
          data: res.data === undefined ? '' : res.data,
          header: res.header || {},
          errMsg: 'request:ok',
        })
      })
  }

  function login(options) {
    const code = `code-${logins.length + 1}`
    logins.push(code)
    setTimeout(() => options.success && options.success({ code, errMsg: 'login:ok' }), 0)
  }

  return { request, login, calls, logins }
}

// An `authenticated` answer of the API for the given tokens.
function authenticated(access, refresh, user) {
  return {
    status: 'authenticated',
    token_type: 'Bearer',
    access_token: access,
    expires_in: 900,
    refresh_token: refresh,
    refresh_expires_in: 2592000,
    user: user || { id: 'u1', username: 'alice', nickname: 'Alice', avatar_url: null, role: 'user', wechat_bound: true, created_at: '2026-01-01T00:00:00Z' },
  }
}

function error(statusCode, code, header) {
  return { statusCode, data: { error: code, message: `server says ${code}` }, header: header || {} }
}

module.exports = { scriptedServer, authenticated, error }
