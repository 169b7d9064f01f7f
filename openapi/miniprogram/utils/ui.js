// Small helpers the pages share: a toast for an error (none when the login flow is taking
// over the screen), and a promise around wx.showModal.
const api = require('./api.js')

function toastError(err) {
  if (api.isQuiet(err)) return
  wx.showToast({ title: api.messageOf(err), icon: 'none', duration: 2500 })
}

// Resolves true when the user tapped the confirm button.
function confirm(title, content, confirmText) {
  return new Promise(function (resolve) {
    wx.showModal({
      title: title,
      content: content,
      confirmText: confirmText || '确定',
      confirmColor: '#fa5151',
      success: function (res) { resolve(Boolean(res && res.confirm)) },
      fail: function () { resolve(false) },
    })
  })
}

module.exports = { toastError, confirm }
