// The message a user sees for each error code of the iotbind API, in Simplified
// Chinese, and for failures that never reached the server. One table so wording stays
// consistent across pages; an unknown code gets the generic message.
const MESSAGES = {
  // Generic answers of any operation.
  invalid_request: '请求有误，请检查填写的内容',
  not_found: '请求的内容不存在',
  method_not_allowed: '不支持该操作',
  payload_too_large: '提交的内容过大',
  request_timeout: '发送超时，请重试',
  too_many_attempts: '尝试次数过多，请稍后再试',
  unavailable: '服务暂时不可用，请稍后再试',
  internal: '服务器开小差了，请稍后再试',
  forbidden: '没有权限执行此操作',

  // Tokens and sessions.
  invalid_token: '登录已过期，请重新登录',
  invalid_refresh_token: '登录已失效，请重新登录',
  refresh_token_reused: '登录已失效，请重新登录',
  refresh_token_rotated: '登录状态已更新，请重试',

  // WeChat login.
  invalid_code: '微信登录失败，请重试',
  code_used: '微信登录凭证已使用，请重试',
  wechat_rate_limited: '微信登录繁忙，请稍后再试',
  wechat_denied: '微信判定当前账号存在风险，暂时无法登录',
  wechat_unavailable: '微信服务暂时不可用，请稍后再试',
  session_key_stale: '微信登录状态已变化，请重新登录',
  invalid_encrypted_data: '微信资料无效，请重试',

  // Bind and register pages.
  invalid_credentials: '用户名或密码错误',
  invalid_bind_ticket: '绑定已超时，请重新操作',
  account_already_bound: '该账号已绑定其他微信',
  wechat_already_bound: '当前微信已绑定其他账号',
  username_taken: '用户名已被占用',
  invalid_username: '用户名需为 3–32 位小写字母、数字或 _ . -',
  weak_password: '密码太弱：至少 8 位，不能全是数字，也不能与用户名相同',

  // The account.
  invalid_nickname: '昵称需为 1–32 个字符',
  invalid_avatar_url: '头像地址无效',
  not_bound: '当前账号未绑定微信',

  // Devices.
  device_not_found: '设备不存在或已被移除',
  claim_failed: '序列号或认领码不正确',
  already_claimed: '该设备已被他人认领',
  invalid_device_name: '设备名称需为 1–64 个字符',
  invalid_model: '设备型号无效',
  invalid_command_name: '指令名称无效',
  command_not_found: '指令不存在',
  broker_unavailable: '设备服务暂时不可用，请稍后再试',

  // Failures on this side of the network.
  network_error: '网络连接失败，请检查网络后重试',
  timeout: '网络超时，请稍后重试',
  bad_response: '服务器返回了无法识别的内容',
  wx_login_failed: '无法获取微信登录凭证，请重试',
  login_required: '请先登录',
}

const GENERIC_MESSAGE = '出错了，请稍后再试'

function messageFor(code) {
  return Object.prototype.hasOwnProperty.call(MESSAGES, code) ? MESSAGES[code] : GENERIC_MESSAGE
}

module.exports = { MESSAGES, GENERIC_MESSAGE, messageFor }
