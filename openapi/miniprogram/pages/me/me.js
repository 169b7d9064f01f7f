// The account: nickname edit, password change, unbinding WeChat (asks for the password, so a
// phone alone cannot move the account), and log out.
const api = require('../../utils/api.js')
const login = require('../../utils/login.js')
const session = require('../../utils/session.js')
const ui = require('../../utils/ui.js')

Component({
  data: {
    loggedOut: false,
    user: null,
    nickname: '',
    nicknameText: '',
    nicknameOk: false,
    currentPassword: '',
    newPassword: '',
    passwordText: '',
    passwordOk: false,
    unbindPassword: '',
    unbindText: '',
    error: '',
  },

  methods: {
    onShow: async function () {
      await login.ready()
      if (session.isLoggedOut()) {
        this.setData({ loggedOut: true, user: null })
        return
      }
      if (!session.get()) return
      try {
        const user = await api.request({ path: '/api/v1/me' })
        session.saveUser(user)
        this.setData({ loggedOut: false, user: user, nickname: user.nickname, error: '' })
      } catch (err) {
        if (!api.isQuiet(err)) this.setData({ error: api.messageOf(err) })
      }
    },

    onNickname: function (e) {
      this.setData({ nickname: e.detail.value, nicknameText: '' })
    },

    onSaveNickname: async function () {
      try {
        const user = await api.request({ path: '/api/v1/me', method: 'PATCH', data: { nickname: this.data.nickname.trim() } })
        session.saveUser(user)
        this.setData({ user: user, nickname: user.nickname, nicknameOk: true, nicknameText: '昵称已保存' })
      } catch (err) {
        if (!api.isQuiet(err)) this.setData({ nicknameOk: false, nicknameText: api.messageOf(err) })
      }
    },

    onCurrentPassword: function (e) {
      this.setData({ currentPassword: e.detail.value, passwordText: '' })
    },

    onNewPassword: function (e) {
      this.setData({ newPassword: e.detail.value, passwordText: '' })
    },

    onChangePassword: async function () {
      if (!this.data.currentPassword || !this.data.newPassword) {
        this.setData({ passwordOk: false, passwordText: '请输入当前密码和新密码' })
        return
      }
      try {
        await api.request({
          path: '/api/v1/me/password',
          method: 'PUT',
          data: { current_password: this.data.currentPassword, new_password: this.data.newPassword },
        })
        this.setData({ currentPassword: '', newPassword: '', passwordOk: true, passwordText: '密码已修改' })
        // A new password ends every login, this one's refresh token included: log in again
        // with WeChat now rather than when the access token runs out.
        await login.logIn()
      } catch (err) {
        if (!api.isQuiet(err)) this.setData({ passwordOk: false, passwordText: api.messageOf(err) })
      }
    },

    onUnbindPassword: function (e) {
      this.setData({ unbindPassword: e.detail.value, unbindText: '' })
    },

    onUnbind: async function () {
      if (!this.data.unbindPassword) {
        this.setData({ unbindText: '请输入账号密码' })
        return
      }
      const sure = await ui.confirm('解除微信绑定', '解除后，这个微信需要重新绑定账号才能使用。', '解除绑定')
      if (!sure) return
      try {
        await api.request({ path: '/api/v1/me/wechat/unbind', method: 'POST', data: { password: this.data.unbindPassword } })
      } catch (err) {
        if (!api.isQuiet(err)) this.setData({ unbindText: api.messageOf(err), unbindPassword: '' })
        return
      }
      // This WeChat user has no account now: end the session and let the login flow show the
      // bind page.
      await login.endSession()
      try {
        const answer = await login.logIn()
        if (answer.status === 'bind_required') login.goToBind()
        else login.goHome()
      } catch (err) {
        ui.toastError(err)
      }
    },

    onLogout: async function () {
      const sure = await ui.confirm('退出登录', '退出后需要重新用微信登录。', '退出')
      if (!sure) return
      await login.logOut()
      login.goHome()
    },

    onLogin: async function () {
      try {
        const answer = await login.logIn()
        if (answer.status === 'bind_required') login.goToBind()
        else this.onShow()
      } catch (err) {
        ui.toastError(err)
      }
    },
  },
})
