// wx.request over real HTTP (Node's http module) and wx.login through the fake WeChat API's
// POST /dev/wechat/codes, so the mini program talks to a running iotbind as on a phone.
const http = require('http')

// wx.request's contract: success with {statusCode, data, header} for any HTTP answer (data
// parsed when it is JSON, '' when empty), fail with {errMsg} when there was none.
function request(options) {
  const method = options.method || 'GET'
  const headers = Object.assign({}, options.header)
  let body = null
  if (options.data !== undefined && method !== 'GET') {
    body = typeof options.data === 'string' ? options.data : JSON.stringify(options.data)
    headers['content-length'] = Buffer.byteLength(body)
  }
  const req = http.request(options.url, { method, headers, timeout: options.timeout || 60000 }, (res) => {
    const chunks = []
    res.on('data', (chunk) => chunks.push(chunk))
    res.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8')
      let data = text
      if (/json/.test(res.headers['content-type'] || '') && text) {
        try {
          data = JSON.parse(text)
        } catch (err) {
          data = text
        }
      }
      options.success && options.success({ statusCode: res.statusCode, data, header: res.headers, errMsg: 'request:ok' })
    })
  })
  req.on('timeout', () => req.destroy(new Error('timeout')))
  req.on('error', (err) => {
    options.fail && options.fail({ errMsg: `request:fail ${err.message}` })
  })
  if (body) req.write(body)
  req.end()
}

// wx.login() for the WeChat user `openid()`; every call mints a fresh code, as WeChat does.
function login(baseUrl, openid) {
  return function (options) {
    request({
      url: `${baseUrl}/dev/wechat/codes`,
      method: 'POST',
      header: { 'content-type': 'application/json' },
      data: { openid: openid() },
      success: (res) => {
        if (res.statusCode === 200) options.success && options.success({ code: res.data.code, errMsg: 'login:ok' })
        else options.fail && options.fail({ errMsg: `login:fail ${res.statusCode}` })
      },
      fail: (res) => options.fail && options.fail({ errMsg: `login:fail ${res.errMsg}` }),
    })
  }
}

// A plain JSON call to the server, for the test's own checks (not through the mini program).
function call(baseUrl, method, path, data) {
  return new Promise((resolve, reject) => {
    request({
      url: baseUrl + path,
      method,
      header: { 'content-type': 'application/json' },
      data,
      success: resolve,
      fail: (res) => reject(new Error(res.errMsg)),
    })
  })
}

module.exports = { request, login, call }
