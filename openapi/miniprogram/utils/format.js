// How times and telemetry values read on the device pages: "3 分钟前", "12-05 09:41:07",
// "21.5", "开" / "关".
function pad(n) {
  return n < 10 ? '0' + n : String(n)
}

// RFC 3339 from the API → a Date, or null.
function parseTime(text) {
  if (!text) return null
  const ms = Date.parse(text)
  return isNaN(ms) ? null : new Date(ms)
}

function clock(date) {
  return pad(date.getHours()) + ':' + pad(date.getMinutes()) + ':' + pad(date.getSeconds())
}

function dateTime(text) {
  const date = parseTime(text)
  if (!date) return ''
  return pad(date.getMonth() + 1) + '-' + pad(date.getDate()) + ' ' + clock(date)
}

// "刚刚", "5 分钟前", "3 小时前", "2 天前"; never seen: "从未上线".
function ago(text, now) {
  const date = parseTime(text)
  if (!date) return '从未上线'
  const seconds = Math.max(0, Math.floor(((now || Date.now()) - date.getTime()) / 1000))
  if (seconds < 60) return '刚刚'
  if (seconds < 3600) return Math.floor(seconds / 60) + ' 分钟前'
  if (seconds < 86400) return Math.floor(seconds / 3600) + ' 小时前'
  return Math.floor(seconds / 86400) + ' 天前'
}

function value(v) {
  if (v === true) return '开'
  if (v === false) return '关'
  if (typeof v === 'number') return String(Math.round(v * 100) / 100)
  return String(v)
}

// {temperature: 21.5, relay: true} → [{name: 'temperature', value: '21.5'}, …], sorted by name
// so rows do not jump around between refreshes.
function values(map) {
  if (!map) return []
  return Object.keys(map).sort().map(function (name) {
    return { name: name, value: value(map[name]) }
  })
}

module.exports = { ago, dateTime, value, values }
