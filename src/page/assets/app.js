// The backup page: talks only to the REST API under /api/v1/core/data-backups with the
// caller's RiverEdge token. No framework, no build step; DOM built with createElement only
// (never innerHTML), so no server text is ever parsed as HTML.
'use strict';

(function () {
  const BASE = '/api/v1/core/data-backups';
  const OWN_TOKEN = 'riveredge-backup.token'; // sessionStorage: the token typed into the login box
  const RIVEREDGE_TOKEN = 'token'; // RiverEdge's own localStorage key (frontend utils/auth.ts)
  const LOGGED_OUT = 'riveredge-backup.logged-out';
  const LANG_KEY = 'riveredge-backup.lang';
  const POLL_MS = 1000;
  const ACTIVE = ['pending', 'running'];

  const I18N = {
    zh: {
      title: '数据备份', skip: '跳到主要内容', logout: '退出', langSwitch: 'English',
      'login.title': '登录', 'login.help': '粘贴 RiverEdge 的访问令牌（JWT）。在 RiverEdge 同域下打开时会自动读取已登录的令牌。',
      'login.token': '访问令牌', 'login.submit': '登录', 'login.expired': '令牌已过期，请重新登录。',
      'login.bad': '令牌格式不正确。', 'login.session': '登录已失效：{msg}',
      'stat.total': '总数', 'stat.success': '成功', 'stat.failed': '失败', 'stat.running': '执行中', 'stat.size': '总大小',
      'list.title': '备份列表', 'list.empty': '暂无备份', refresh: '刷新', 'policy.open': '备份策略', 'create.open': '创建备份',
      'f.name': '名称', 'f.type': '类型', 'f.scope': '范围', 'f.status': '状态', 'f.tenant': '组织 ID', any: '全部',
      search: '查询', reset: '重置', prev: '上一页', next: '下一页', pagesize: '每页', pageInfo: '第 {page} / {pages} 页，共 {total} 条',
      'type.full': '全量', 'type.incremental': '增量', 'scope.all': '全部', 'scope.tenant': '组织', 'scope.table': '表',
      'status.pending': '待执行', 'status.running': '执行中', 'status.success': '成功', 'status.failed': '失败',
      'col.name': '名称', 'col.type': '类型', 'col.scope': '范围', 'col.status': '状态', 'col.tenant': '组织', 'col.size': '大小',
      'col.created': '创建时间', 'col.started': '开始', 'col.completed': '完成', 'col.duration': '耗时', 'col.actions': '操作',
      'act.detail': '详情', 'act.download': '下载', 'act.restore': '恢复', 'act.delete': '删除',
      'chart.title': '备份大小与耗时', 'chart.size': '大小', 'chart.duration': '耗时', 'chart.none': '还没有成功的备份',
      'create.title': '创建备份', 'c.name': '名称', 'c.type': '备份类型', 'c.scope': '备份范围', 'c.tenant': '组织 ID',
      'c.tables': '选择表', 'c.filter': '筛选表', 'c.noTables': '请至少选择一张表', 'c.tenantCol': '含 tenant_id',
      'create.submit': '创建', 'create.done': '已创建备份 “{name}”，正在排队执行', cancel: '取消', close: '关闭', save: '保存',
      'detail.title': '备份详情', 'd.uuid': 'UUID', 'd.tables': '表', 'd.file': '文件路径', 'd.run': 'Inngest 运行',
      'd.checksum': '清单校验和', 'd.verified': '校验时间', 'd.updated': '更新时间', 'd.progress': '进度',
      'd.bytes': '已写入', 'd.rows': '行数', 'd.tablesDone': '表', 'd.rate': '速率', 'd.error': '错误信息',
      'd.manifest': '清单摘要', 'd.table': '表', 'd.size': '压缩大小', 'd.raw': '原始大小', 'd.sha': 'sha256', 'd.total': '合计',
      'd.noManifest': '清单不可用：{msg}', 'd.chain': '备份链', 'd.parent': '父备份', 'd.children': '依赖它的备份', 'd.none': '无',
      'd.restores': '恢复记录', 'd.noRestores': '还没有恢复', 'd.target': '目标', 'd.live': '当前数据库', 'd.report': '报告',
      'd.dry': '演练', 'd.safety': '安全备份',
      'restore.title': '恢复备份', 'restore.warn': '此操作将覆盖当前数据库中的数据。请先预览将发生的变化。', 'restore.backup': '备份',
      'restore.target': '目标数据库（可选）', 'restore.replace': '替换整个数据库', 'restore.preview': '预览（演练）',
      'restore.typeName': '输入备份名称 “{name}” 以确认恢复', 'restore.submit': '确认恢复', 'restore.queued': '恢复已排队：{name}',
      'restore.previewing': '正在计算预览…', 'p.table': '表', 'p.insert': '插入', 'p.update': '更新', 'p.delete': '删除',
      'p.sequence': '序列', 'p.from': '从', 'p.to': '到', 'p.nothing': '没有需要改变的行',
      'delete.title': '删除备份', 'delete.warn': '将删除备份记录及其文件，无法撤销。', 'delete.force': '仍然删除（依赖它的增量备份将无法恢复）',
      'delete.chain': '{n} 个备份依赖此备份：{list}', 'delete.submit': '删除', 'delete.done': '已删除 “{name}”',
      'download.done': '已下载 {file}（{size}）', 'download.busy': '正在下载 {name}…',
      'policy.title': '备份策略', 'policy.saved': '备份策略已保存', 'policy.null': '留空表示不启用',
      'policy.retention_days_full': '全量备份保留天数', 'policy.retention_days_incremental': '增量备份保留天数',
      'policy.min_keep': '至少保留的成功备份数', 'policy.full_cron': '全量备份计划（cron，UTC）', 'policy.incremental_cron': '增量备份计划（cron，UTC）',
      'role.platform': '平台管理员', 'role.tenant': '组织管理员 · 组织 {tenant}', 'err.network': '网络错误：{msg}',
    },
    en: {
      title: 'Data backups', skip: 'Skip to main content', logout: 'Log out', langSwitch: '中文',
      'login.title': 'Log in', 'login.help': 'Paste a RiverEdge access token (JWT). Opened under RiverEdge\'s own address, the page uses the token you are logged in with.',
      'login.token': 'Access token', 'login.submit': 'Log in', 'login.expired': 'The token has expired; log in again.',
      'login.bad': 'This is not a token.', 'login.session': 'Session ended: {msg}',
      'stat.total': 'Total', 'stat.success': 'Succeeded', 'stat.failed': 'Failed', 'stat.running': 'Running', 'stat.size': 'Total size',
      'list.title': 'Backups', 'list.empty': 'No backups', refresh: 'Refresh', 'policy.open': 'Policy', 'create.open': 'New backup',
      'f.name': 'Name', 'f.type': 'Type', 'f.scope': 'Scope', 'f.status': 'Status', 'f.tenant': 'Tenant id', any: 'Any',
      search: 'Search', reset: 'Reset', prev: 'Previous', next: 'Next', pagesize: 'Per page', pageInfo: 'Page {page} of {pages}, {total} backups',
      'type.full': 'Full', 'type.incremental': 'Incremental', 'scope.all': 'All', 'scope.tenant': 'Tenant', 'scope.table': 'Tables',
      'status.pending': 'Pending', 'status.running': 'Running', 'status.success': 'Success', 'status.failed': 'Failed',
      'col.name': 'Name', 'col.type': 'Type', 'col.scope': 'Scope', 'col.status': 'Status', 'col.tenant': 'Tenant', 'col.size': 'Size',
      'col.created': 'Created', 'col.started': 'Started', 'col.completed': 'Completed', 'col.duration': 'Duration', 'col.actions': 'Actions',
      'act.detail': 'Details', 'act.download': 'Download', 'act.restore': 'Restore', 'act.delete': 'Delete',
      'chart.title': 'Backup size and duration', 'chart.size': 'Size', 'chart.duration': 'Duration', 'chart.none': 'No successful backups yet',
      'create.title': 'New backup', 'c.name': 'Name', 'c.type': 'Type', 'c.scope': 'Scope', 'c.tenant': 'Tenant id',
      'c.tables': 'Tables', 'c.filter': 'Filter tables', 'c.noTables': 'Choose at least one table', 'c.tenantCol': 'has tenant_id',
      'create.submit': 'Create', 'create.done': 'Backup "{name}" created and queued', cancel: 'Cancel', close: 'Close', save: 'Save',
      'detail.title': 'Backup details', 'd.uuid': 'UUID', 'd.tables': 'Tables', 'd.file': 'File path', 'd.run': 'Inngest run',
      'd.checksum': 'Manifest checksum', 'd.verified': 'Verified at', 'd.updated': 'Updated', 'd.progress': 'Progress',
      'd.bytes': 'Written', 'd.rows': 'Rows', 'd.tablesDone': 'Tables', 'd.rate': 'Rate', 'd.error': 'Error',
      'd.manifest': 'Manifest summary', 'd.table': 'Table', 'd.size': 'Stored', 'd.raw': 'Raw', 'd.sha': 'sha256', 'd.total': 'Total',
      'd.noManifest': 'Manifest unavailable: {msg}', 'd.chain': 'Chain', 'd.parent': 'Parent', 'd.children': 'Depend on it', 'd.none': 'none',
      'd.restores': 'Restores', 'd.noRestores': 'No restores yet', 'd.target': 'Target', 'd.live': 'live database', 'd.report': 'Report',
      'd.dry': 'dry run', 'd.safety': 'Safety backup',
      'restore.title': 'Restore backup', 'restore.warn': 'A restore overwrites data in the database. Preview what would change first.', 'restore.backup': 'Backup',
      'restore.target': 'Target database (optional)', 'restore.replace': 'Replace the whole database', 'restore.preview': 'Preview (dry run)',
      'restore.typeName': 'Type the backup name "{name}" to confirm', 'restore.submit': 'Restore', 'restore.queued': 'Restore queued: {name}',
      'restore.previewing': 'Computing the preview…', 'p.table': 'Table', 'p.insert': 'Insert', 'p.update': 'Update', 'p.delete': 'Delete',
      'p.sequence': 'Sequence', 'p.from': 'From', 'p.to': 'To', 'p.nothing': 'No rows would change',
      'delete.title': 'Delete backup', 'delete.warn': 'The backup record and its files are deleted. This cannot be undone.', 'delete.force': 'Delete anyway (incrementals that depend on it become unrestorable)',
      'delete.chain': '{n} backups depend on this one: {list}', 'delete.submit': 'Delete', 'delete.done': 'Deleted "{name}"',
      'download.done': 'Downloaded {file} ({size})', 'download.busy': 'Downloading {name}…',
      'policy.title': 'Backup policy', 'policy.saved': 'Policy saved', 'policy.null': 'Leave empty to disable',
      'policy.retention_days_full': 'Keep full backups (days)', 'policy.retention_days_incremental': 'Keep incremental backups (days)',
      'policy.min_keep': 'Always keep the newest N successful backups', 'policy.full_cron': 'Full backup schedule (cron, UTC)', 'policy.incremental_cron': 'Incremental schedule (cron, UTC)',
      'role.platform': 'Platform admin', 'role.tenant': 'Tenant admin · tenant {tenant}', 'err.network': 'Network error: {msg}',
    },
  };

  let lang = localStorage.getItem(LANG_KEY) === 'en' ? 'en' : 'zh';
  const t = (key, vars) => {
    let s = I18N[lang][key] ?? I18N.zh[key] ?? key;
    for (const [k, v] of Object.entries(vars || {})) s = s.split('{' + k + '}').join(String(v));
    return s;
  };

  // ---- DOM helpers -------------------------------------------------------------------------
  const $ = (id) => document.getElementById(id);
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  const SVG = 'http://www.w3.org/2000/svg';
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
    for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return el;
  }
  function show(el, text, bad) {
    el.textContent = text;
    el.hidden = !text;
    if (bad !== undefined) el.classList.toggle('bad', bad);
  }
  let noticeTimer = null;
  function notice(text, bad) {
    show($('notice'), text, !!bad);
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => show($('notice'), ''), 8000);
  }

  // ---- formatting --------------------------------------------------------------------------
  function fmtSize(n) {
    if (n === null || n === undefined || n === 0) return '-';
    const units = ['B', 'KB', 'MB', 'GB', 'TB'];
    let i = 0;
    let v = Number(n);
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (i === 0 ? String(v) : v.toFixed(v < 10 ? 2 : 1)) + ' ' + units[i];
  }
  const pad = (n) => String(n).padStart(2, '0');
  function fmtTime(iso) {
    if (!iso) return '-';
    const d = new Date(iso);
    if (isNaN(d)) return iso;
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }
  function seconds(start, end) {
    if (!start) return null;
    const a = new Date(start).getTime();
    const b = end ? new Date(end).getTime() : Date.now();
    return Math.max(0, (b - a) / 1000);
  }
  function fmtDuration(secs) {
    if (secs === null || secs === undefined) return '-';
    const total = Math.round(secs);
    const hh = Math.floor(total / 3600), mm = Math.floor((total % 3600) / 60), ss = total % 60;
    const u = lang === 'zh' ? ['小时', '分', '秒'] : ['h ', 'm ', 's'];
    if (hh) return `${hh}${u[0]}${mm}${u[1]}`.trim();
    if (mm) return `${mm}${u[1]}${ss}${u[2]}`.trim();
    if (total === 0 && secs > 0) return `${secs.toFixed(1)}${u[2]}`.trim();
    return `${ss}${u[2]}`.trim();
  }
  const fmtNum = (n) => (n === null || n === undefined ? '-' : Number(n).toLocaleString(lang === 'zh' ? 'zh-CN' : 'en-US'));
  const looksUuid = (v) => typeof v === 'string' && /^[0-9a-f]{8}-[0-9a-f]{4}-/i.test(v);

  const TYPE_COLOR = { full: 'blue', incremental: 'green' };
  const STATUS_COLOR = { pending: 'grey', running: 'blue processing', success: 'green', failed: 'red' };
  function tag(kind, value) {
    const colors = kind === 'type' ? TYPE_COLOR : STATUS_COLOR;
    const known = Object.prototype.hasOwnProperty.call(colors, value);
    return h('span', { class: 'tag ' + (known ? colors[value] : 'grey'), ['data-' + kind]: value },
      known ? t(kind + '.' + value) : String(value ?? '-'));
  }
  const scopeText = (v) => (['all', 'tenant', 'table'].includes(v) ? t('scope.' + v) : String(v ?? '-'));

  // ---- auth --------------------------------------------------------------------------------
  let token = null;
  let claims = {};
  function decode(jwt) {
    const part = (jwt || '').split('.')[1];
    if (!part) return null;
    try {
      const b64 = part.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - (part.length % 4)) % 4);
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      return JSON.parse(new TextDecoder().decode(bytes));
    } catch (_) {
      return null;
    }
  }
  // For showing and hiding controls only: the API decides what the token may do.
  const isPlatform = () => claims.is_infra_superadmin === true || (claims.is_infra_admin === true && claims.tenant_id == null);

  class ApiError extends Error {
    constructor(status, message, body) { super(message); this.status = status; this.body = body; }
  }
  function errorText(body, status) {
    if (body && typeof body.detail === 'string') return body.detail;
    if (body && Array.isArray(body.detail)) {
      return body.detail.map((d) => (d.loc ? d.loc.filter((p) => p !== 'body').join('.') + ': ' : '') + d.msg).join('\n');
    }
    if (body && body.error && body.error.message) return body.error.message;
    return 'HTTP ' + status;
  }
  async function request(method, path, body, extraHeaders) {
    const headers = { Authorization: 'Bearer ' + token, ...(extraHeaders || {}) };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let res;
    try {
      res = await fetch(BASE + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store' });
    } catch (e) {
      throw new ApiError(0, t('err.network', { msg: e.message }));
    }
    return res;
  }
  async function api(method, path, body, extraHeaders) {
    const res = await request(method, path, body, extraHeaders);
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
    if (!res.ok) {
      const err = new ApiError(res.status, errorText(data, res.status), data);
      if (res.status === 401) sessionEnded(err.message);
      throw err;
    }
    return data;
  }

  function readToken() {
    const own = sessionStorage.getItem(OWN_TOKEN);
    if (own) return own;
    if (sessionStorage.getItem(LOGGED_OUT)) return null;
    try { return localStorage.getItem(RIVEREDGE_TOKEN); } catch (_) { return null; }
  }
  function useToken(raw) {
    const cleaned = (raw || '').trim().replace(/^Bearer\s+/i, '');
    const c = decode(cleaned);
    if (!c) return t('login.bad');
    if (typeof c.exp === 'number' && c.exp * 1000 < Date.now()) return t('login.expired');
    token = cleaned;
    claims = c;
    return null;
  }
  function showLogin(message) {
    stopPolling();
    token = null;
    claims = {};
    $('app').hidden = true;
    $('who').hidden = true;
    $('logout').hidden = true;
    $('login').hidden = false;
    show($('login-error'), message || '');
    $('token').focus();
  }
  function sessionEnded(message) {
    sessionStorage.removeItem(OWN_TOKEN);
    showLogin(t('login.session', { msg: message }));
  }
  function setWho() {
    $('who').textContent = (claims.username ? claims.username + ' · ' : '') +
      (isPlatform() ? t('role.platform') : t('role.tenant', { tenant: claims.tenant_id }));
  }
  async function enter() {
    $('login').hidden = true;
    $('app').hidden = false;
    $('logout').hidden = false;
    setWho();
    $('who').hidden = false;
    for (const el of document.querySelectorAll('.platform-only')) {
      el.hidden = !isPlatform();
      if (el.tagName === 'OPTION') el.disabled = !isPlatform();
    }
    $('open-policy').hidden = !isPlatform();
    document.body.classList.toggle('platform', isPlatform());
    await Promise.all([loadList(), loadStats()]);
  }

  // ---- list ------------------------------------------------------------------------------
  const list = { page: 1, pageSize: 20, total: 0, items: [], filters: {} };
  let lastSeen = '';
  let pollTimer = null;
  function stopPolling() { clearTimeout(pollTimer); pollTimer = null; }
  function schedulePoll() {
    stopPolling();
    const listActive = list.items.some((b) => ACTIVE.includes(b.status));
    const detailActive = current.detail && current.active;
    if (!token || (!listActive && !detailActive)) return;
    pollTimer = setTimeout(async () => {
      try {
        await loadList(true);
        if (current.detail && $('detail').open) await loadDetail(current.detail.uuid, true);
      } catch (_) { /* shown by the next user action */ }
      schedulePoll();
    }, POLL_MS);
  }

  function query(params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== '' && v !== null && v !== undefined) q.set(k, v);
    const s2 = q.toString();
    return s2 ? '?' + s2 : '';
  }
  async function loadList(quiet) {
    let data;
    try {
      data = await api('GET', query({ page: list.page, page_size: list.pageSize, ...list.filters }));
    } catch (e) {
      if (!quiet && e.status !== 401) notice(e.message, true);
      if (quiet) throw e;
      return;
    }
    const pages = Math.max(1, Math.ceil((data.total || 0) / list.pageSize));
    if (list.page > pages) {
      // The last page emptied (deletes, a narrower filter): show the new last page.
      list.page = pages;
      return loadList(quiet);
    }
    const json = JSON.stringify(data);
    list.items = data.items || [];
    list.total = data.total || 0;
    // Polling redraws only what changed, so a row is never replaced under the user's click.
    if (!quiet || json !== list.json) renderList();
    list.json = json;
    const seen = list.items.map((b) => b.uuid + b.status).join();
    if (lastSeen && seen !== lastSeen) loadStats();
    lastSeen = seen;
    schedulePoll();
  }

  function progressCell(b) {
    if (!ACTIVE.includes(b.status)) return null;
    const p = b.progress || {};
    const secs = seconds(b.started_at);
    const rate = secs && p.bytes_written ? fmtSize(p.bytes_written / secs) + '/s' : null;
    const parts = [fmtSize(p.bytes_written || 0), fmtNum(p.rows_written || 0) + (lang === 'zh' ? ' 行' : ' rows')];
    if (p.tables_total) parts.push(`${p.tables_done ?? 0}/${p.tables_total} ${lang === 'zh' ? '表' : 'tables'}`);
    if (rate) parts.push(rate);
    const box = h('div', { class: 'progress', 'data-progress': b.uuid }, parts.join(' · '));
    if (p.tables_total) {
      const bar = h('i');
      bar.style.width = Math.round(100 * (p.tables_done || 0) / p.tables_total) + '%';
      box.append(h('div', { class: 'meter', role: 'presentation' }, bar));
    }
    return box;
  }

  function actionButton(action, label, b, opts) {
    return h('button', {
      type: 'button', class: 'btn link' + (action === 'delete' ? ' danger' : ''), 'data-action': action,
      'data-uuid': b.uuid, 'aria-label': label + ': ' + b.name, disabled: opts && opts.disabled,
      onclick: () => ACTIONS[action](b),
    }, label);
  }

  function renderList() {
    const body = $('rows');
    body.replaceChildren();
    const platform = isPlatform();
    for (const el of document.querySelectorAll('.col-tenant')) el.hidden = !platform;
    for (const b of list.items) {
      const cell = (key, ...content) => h('td', { 'data-label': t('col.' + key), 'data-col': key, class: key === 'name' ? 'name' : null }, ...content);
      const ok = b.status === 'success';
      const tr = h('tr', { 'data-uuid': b.uuid, 'data-status': b.status },
        cell('name', h('button', { type: 'button', class: 'btn link', 'data-action': 'open', onclick: () => ACTIONS.detail(b) }, b.name)),
        cell('type', tag('type', b.backup_type)),
        cell('scope', scopeText(b.backup_scope)),
        cell('status', tag('status', b.status), progressCell(b)),
        platform ? cell('tenant', b.tenant_id == null ? (lang === 'zh' ? '平台' : 'platform') : String(b.tenant_id)) : null,
        cell('size', h('span', { class: 'num' }, fmtSize(b.file_size))),
        cell('created', fmtTime(b.created_at)),
        cell('started', fmtTime(b.started_at)),
        cell('completed', fmtTime(b.completed_at)),
        cell('duration', fmtDuration(seconds(b.started_at, b.completed_at))),
        cell('actions',
          actionButton('detail', t('act.detail'), b),
          ok ? actionButton('download', t('act.download'), b) : null,
          ok ? actionButton('restore', t('act.restore'), b) : null,
          actionButton('delete', t('act.delete'), b, { disabled: b.status === 'running' })),
      );
      body.append(tr);
    }
    $('empty').hidden = list.items.length > 0;
    const pages = Math.max(1, Math.ceil(list.total / list.pageSize));
    $('page-info').textContent = t('pageInfo', { page: list.page, pages, total: list.total });
    $('prev').disabled = list.page <= 1;
    $('next').disabled = list.page >= pages;
  }

  // ---- statistics and chart --------------------------------------------------------------
  async function loadStats() {
    let data;
    try {
      data = await api('GET', query({ page: 1, page_size: 1000 }));
    } catch (_) {
      return;
    }
    const items = data.items || [];
    const count = (st) => items.filter((b) => b.status === st).length;
    $('stat-total').textContent = fmtNum(data.total);
    $('stat-success').textContent = fmtNum(count('success'));
    $('stat-failed').textContent = fmtNum(count('failed'));
    $('stat-running').textContent = fmtNum(count('running'));
    $('stat-size').textContent = fmtSize(items.reduce((a, b) => a + (b.file_size || 0), 0)) || '-';
    renderChart(items.filter((b) => b.status === 'success' && b.completed_at).slice(0, 40).reverse());
  }

  function renderChart(points) {
    const box = $('chart');
    box.replaceChildren();
    if (!points.length) {
      box.append(h('p', { class: 'empty' }, t('chart.none')));
      return;
    }
    const W = 1000, H = 240, L = 70, R = 60, T = 12, B = 36;
    const iw = W - L - R, ih = H - T - B;
    const maxSize = Math.max(...points.map((p) => p.file_size || 0), 1);
    const durs = points.map((p) => seconds(p.started_at, p.completed_at) || 0);
    const maxDur = Math.max(...durs, 1);
    const step = iw / points.length;
    const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': t('chart.title') });
    svg.append(s('line', { class: 'axis', x1: L, y1: T + ih, x2: L + iw, y2: T + ih }));
    svg.append(s('line', { class: 'axis', x1: L, y1: T, x2: L, y2: T + ih }));
    svg.append(s('line', { class: 'axis', x1: L + iw, y1: T, x2: L + iw, y2: T + ih }));
    svg.append(s('text', { x: L - 6, y: T + 10, 'text-anchor': 'end' }, fmtSize(maxSize)));
    svg.append(s('text', { x: L - 6, y: T + ih, 'text-anchor': 'end' }, '0'));
    svg.append(s('text', { x: L + iw + 6, y: T + 10 }, fmtDuration(maxDur)));
    const line = [];
    points.forEach((p, i) => {
      const bh = ih * (p.file_size || 0) / maxSize;
      const bw = Math.min(step * 0.7, 36);
      const x = L + i * step + (step - bw) / 2;
      const rect = s('rect', { class: 'bar-size', x: x.toFixed(1), y: (T + ih - bh).toFixed(1), width: bw.toFixed(1), height: bh.toFixed(1) });
      rect.append(s('title', {}, `${p.name} · ${fmtTime(p.completed_at)} · ${fmtSize(p.file_size)} · ${fmtDuration(durs[i])}`));
      svg.append(rect);
      const cx = L + i * step + step / 2;
      const cy = T + ih - ih * durs[i] / maxDur;
      line.push(`${cx.toFixed(1)},${cy.toFixed(1)}`);
      svg.append(s('circle', { class: 'dot-dur', cx: cx.toFixed(1), cy: cy.toFixed(1), r: 3 }));
    });
    svg.append(s('polyline', { class: 'line-dur', points: line.join(' ') }));
    const first = points[0], last = points[points.length - 1];
    svg.append(s('text', { x: L, y: H - 12 }, fmtTime(first.completed_at)));
    svg.append(s('text', { x: L + iw, y: H - 12, 'text-anchor': 'end' }, fmtTime(last.completed_at)));
    box.append(svg);
  }

  // ---- detail ----------------------------------------------------------------------------
  const current = { detail: null, active: false, manifest: null };
  const dl = (pairs) => h('dl', { class: 'kv' }, pairs.filter(Boolean).flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
  const uuidLink = (u) => (looksUuid(u)
    ? h('button', { type: 'button', class: 'btn link mono', onclick: () => openDetail(u) }, u)
    : h('span', { class: 'mono' }, String(u)));

  function previewTable(preview) {
    const wrap = h('div', { class: 'preview-table' });
    const tables = (preview && preview.tables) || [];
    if (!tables.length) wrap.append(h('p', {}, t('p.nothing')));
    else {
      wrap.append(h('table', { class: 'grid', 'data-preview': 'tables' },
        h('thead', {}, h('tr', {}, ...['p.table', 'p.insert', 'p.update', 'p.delete'].map((k) => h('th', { scope: 'col' }, t(k))))),
        h('tbody', {}, tables.map((r) => h('tr', {},
          h('td', { 'data-label': t('p.table') }, r.table),
          h('td', { class: 'num ins', 'data-label': t('p.insert') }, fmtNum(r.insert)),
          h('td', { class: 'num upd', 'data-label': t('p.update') }, fmtNum(r.update)),
          h('td', { class: 'num del', 'data-label': t('p.delete') }, fmtNum(r.delete)))))));
    }
    const seqs = (preview && preview.sequences) || [];
    if (seqs.length) {
      wrap.append(h('table', { class: 'grid', 'data-preview': 'sequences' },
        h('thead', {}, h('tr', {}, ...['p.sequence', 'p.from', 'p.to'].map((k) => h('th', { scope: 'col' }, t(k))))),
        h('tbody', {}, seqs.map((r) => h('tr', {},
          h('td', { 'data-label': t('p.sequence') }, r.sequence),
          h('td', { class: 'num', 'data-label': t('p.from') }, fmtNum(r.from)),
          h('td', { class: 'num', 'data-label': t('p.to') }, fmtNum(r.to)))))));
    }
    return wrap;
  }

  function restoreReport(r) {
    const parts = [];
    if (r.preview) parts.push(previewTable(r.preview));
    else if (r.rows_per_table && Object.keys(r.rows_per_table).length) {
      parts.push(h('table', { class: 'grid' },
        h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, t('d.table')), h('th', { scope: 'col' }, t('d.rows')))),
        h('tbody', {}, Object.entries(r.rows_per_table).map(([k, v]) => h('tr', {}, h('td', {}, k), h('td', { class: 'num' }, fmtNum(v)))))));
    }
    if (r.safety_backup_uuid) parts.push(h('p', {}, t('d.safety') + ': ', uuidLink(r.safety_backup_uuid)));
    if (r.error_message) parts.push(h('pre', { class: 'error' }, r.error_message));
    return parts;
  }

  function chainSection(chain) {
    if (!chain || typeof chain !== 'object') return h('p', {}, t('d.none'));
    const pairs = [];
    for (const [k, v] of Object.entries(chain)) {
      const label = k === 'parent' ? t('d.parent') : k === 'children' ? t('d.children') : k;
      let value;
      if (Array.isArray(v)) {
        value = v.length
          ? h('ul', {}, v.map((x) => h('li', {}, typeof x === 'object' && x ? [uuidLink(x.uuid), x.status ? [' ', tag('status', x.status)] : null, x.name ? ' ' + x.name : null] : uuidLink(x))))
          : t('d.none');
      } else if (v === null || v === undefined) value = t('d.none');
      else if (typeof v === 'object') value = h('span', { class: 'mono' }, JSON.stringify(v));
      else value = looksUuid(v) ? uuidLink(v) : String(v);
      pairs.push([label, value]);
    }
    return dl(pairs);
  }

  async function manifestSection(b) {
    const box = h('div', { 'data-section': 'manifest' });
    if (b.status !== 'success') return box;
    box.append(h('h3', { class: 'section-title' }, t('d.manifest')));
    let m = current.manifest && current.manifest.uuid === b.uuid ? current.manifest.data : null;
    if (!m) {
      try {
        m = await api('GET', '/' + b.uuid + '/files/manifest.json');
        current.manifest = { uuid: b.uuid, data: m };
      } catch (e) {
        box.append(h('p', { class: 'warn' }, t('d.noManifest', { msg: e.message })));
        return box;
      }
    }
    const tables = (m && m.tables) || [];
    const sum = (k) => tables.reduce((a, x) => a + (Number(x[k]) || 0), 0);
    box.append(dl([
      [t('d.tablesDone'), fmtNum(tables.length)],
      [t('d.rows'), fmtNum(sum('rows'))],
      [t('d.size'), fmtSize(sum('size'))],
      [t('d.raw'), fmtSize(sum('raw_size'))],
      m.server_version ? ['PostgreSQL', m.server_version] : null,
      [t('d.checksum'), h('span', { class: 'mono' }, b.checksum || '-')],
      [t('d.verified'), fmtTime(b.verified_at)],
    ]));
    if (tables.length) {
      box.append(h('div', { class: 'table-wrap' }, h('table', { class: 'grid', 'data-manifest': 'tables' },
        h('thead', {}, h('tr', {}, ...['d.table', 'd.rows', 'd.size', 'd.raw', 'd.sha'].map((k) => h('th', { scope: 'col' }, t(k))))),
        h('tbody', {}, tables.map((x) => h('tr', {},
          h('td', { 'data-label': t('d.table') }, `${x.schema}.${x.name}`),
          h('td', { class: 'num', 'data-label': t('d.rows') }, fmtNum(x.rows)),
          h('td', { class: 'num', 'data-label': t('d.size') }, fmtSize(x.size)),
          h('td', { class: 'num', 'data-label': t('d.raw') }, fmtSize(x.raw_size)),
          h('td', { class: 'mono', 'data-label': t('d.sha'), title: x.sha256 }, String(x.sha256 || '').slice(0, 12))))))));
    }
    return box;
  }

  async function loadDetail(uuid, quiet) {
    let d;
    try {
      d = await api('GET', '/' + uuid);
    } catch (e) {
      if (!quiet) notice(e.message, true);
      return null;
    }
    const json = JSON.stringify(d);
    if (quiet && current.json === json && current.detail && current.detail.uuid === d.uuid) return d;
    current.json = json;
    current.detail = d;
    current.active = ACTIVE.includes(d.status) || (d.restores || []).some((r) => ACTIVE.includes(r.status));
    const p = d.progress || {};
    const body = $('detail-body');
    const ok = d.status === 'success';
    const nodes = [
      h('div', { class: 'actions' },
        ok ? actionButton('download', t('act.download'), d) : null,
        ok ? actionButton('restore', t('act.restore'), d) : null,
        actionButton('delete', t('act.delete'), d, { disabled: d.status === 'running' })),
      dl([
        [t('col.name'), h('strong', {}, d.name)],
        [t('d.uuid'), h('span', { class: 'mono' }, d.uuid)],
        [t('col.type'), tag('type', d.backup_type)],
        [t('col.scope'), scopeText(d.backup_scope)],
        d.backup_tables && d.backup_tables.length ? [t('d.tables'), d.backup_tables.join(', ')] : null,
        isPlatform() ? [t('col.tenant'), d.tenant_id == null ? '-' : String(d.tenant_id)] : null,
        [t('col.status'), h('span', { 'data-detail-status': d.status }, tag('status', d.status))],
        [t('col.size'), fmtSize(d.file_size)],
        [t('d.file'), h('span', { class: 'mono' }, d.file_path || '-')],
        [t('col.created'), fmtTime(d.created_at)],
        [t('col.started'), fmtTime(d.started_at)],
        [t('col.completed'), fmtTime(d.completed_at)],
        [t('col.duration'), fmtDuration(seconds(d.started_at, d.completed_at))],
        [t('d.run'), h('span', { class: 'mono' }, d.inngest_run_id || '-')],
      ]),
    ];
    if (ACTIVE.includes(d.status)) {
      const secs = seconds(d.started_at);
      nodes.push(h('h3', { class: 'section-title' }, t('d.progress')), dl([
        [t('d.bytes'), fmtSize(p.bytes_written || 0)],
        [t('d.rows'), fmtNum(p.rows_written || 0)],
        [t('d.tablesDone'), p.tables_total ? `${p.tables_done ?? 0} / ${p.tables_total}` : '-'],
        [t('d.rate'), secs && p.bytes_written ? fmtSize(p.bytes_written / secs) + '/s' : '-'],
      ]));
    }
    if (d.error_message) nodes.push(h('h3', { class: 'section-title' }, t('d.error')), h('pre', { class: 'error', 'data-error': '' }, d.error_message));
    nodes.push(await manifestSection(d));
    nodes.push(h('h3', { class: 'section-title' }, t('d.chain')), chainSection(d.chain));
    nodes.push(h('h3', { class: 'section-title' }, t('d.restores')));
    const restores = d.restores || [];
    if (!restores.length) nodes.push(h('p', {}, t('d.noRestores')));
    for (const r of restores) {
      nodes.push(h('div', { class: 'card restore', 'data-restore': r.uuid, 'data-status': r.status },
        dl([
          [t('col.status'), [tag('status', r.status), r.dry_run ? ' ' + t('d.dry') : '']],
          [t('d.uuid'), h('span', { class: 'mono' }, r.uuid)],
          [t('d.target'), r.target_database || t('d.live')],
          r.restore_tables && r.restore_tables.length ? [t('d.tables'), r.restore_tables.join(', ')] : null,
          [t('col.created'), fmtTime(r.created_at)],
          [t('col.completed'), fmtTime(r.completed_at)],
          [t('col.duration'), fmtDuration(seconds(r.started_at, r.completed_at))],
        ]),
        restoreReport(r)));
    }
    body.replaceChildren(...nodes);
    return d;
  }

  async function openDetail(uuid) {
    const dlg = $('detail');
    current.manifest = null;
    $('detail-body').replaceChildren();
    if (!dlg.open) dlg.showModal();
    await loadDetail(uuid);
    schedulePoll();
  }

  // ---- actions -------------------------------------------------------------------------
  const ACTIONS = {
    detail: (b) => openDetail(b.uuid),
    download: download,
    restore: openRestore,
    delete: openDelete,
  };

  async function download(b) {
    notice(t('download.busy', { name: b.name }));
    const res = await request('GET', '/' + b.uuid + '/download');
    if (!res.ok) {
      let data = null;
      try { data = await res.json(); } catch (_) { /* not JSON */ }
      if (res.status === 401) sessionEnded(errorText(data, 401));
      notice(errorText(data, res.status), true);
      return;
    }
    const blob = await res.blob();
    const file = `${b.name || 'backup'}_${b.uuid.slice(0, 8)}.zip`;
    const url = URL.createObjectURL(blob);
    const a = h('a', { href: url, download: file, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
    notice(t('download.done', { file, size: fmtSize(blob.size) }));
  }

  // Create
  let tablesCache = null;
  async function loadTables() {
    const box = $('c-table-list');
    if (!tablesCache) {
      try {
        tablesCache = (await api('GET', '/tables')).items || [];
      } catch (e) {
        show($('create-error'), e.message);
        return;
      }
    }
    const filter = $('c-table-filter').value.trim().toLowerCase();
    const checked = new Set([...box.querySelectorAll('input:checked')].map((i) => i.value));
    box.replaceChildren(...tablesCache
      .filter((x) => !filter || `${x.schema}.${x.name}`.toLowerCase().includes(filter) || checked.has(`${x.schema}.${x.name}`))
      .map((x) => {
        const name = `${x.schema}.${x.name}`;
        return h('label', {}, h('input', { type: 'checkbox', value: name, checked: checked.has(name) }), name,
          x.tenant_id ? h('span', { class: 'tag grey' }, t('c.tenantCol')) : null);
      }));
  }
  function syncCreateScope() {
    const scope = $('c-scope').value;
    $('c-tables').hidden = scope !== 'table';
    $('c-tenant-row').hidden = !isPlatform() || scope === 'all';
    if (scope === 'table') loadTables();
  }
  function openCreate() {
    const form = $('create-form');
    form.reset();
    show($('create-error'), '');
    $('c-scope').value = isPlatform() ? 'all' : 'tenant';
    syncCreateScope();
    $('create').showModal();
    $('c-name').focus();
  }
  function idempotencyKey() {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (x) => x.toString(16).padStart(2, '0')).join('');
  }
  async function submitCreate(ev) {
    ev.preventDefault();
    const body = { name: $('c-name').value.trim(), backup_type: $('c-type').value, backup_scope: $('c-scope').value };
    if (body.backup_scope === 'table') {
      body.backup_tables = [...$('c-table-list').querySelectorAll('input:checked')].map((i) => i.value);
      if (!body.backup_tables.length) return show($('create-error'), t('c.noTables'));
    }
    const tenant = $('c-tenant').value.trim();
    if (isPlatform() && tenant && body.backup_scope !== 'all') body.tenant_id = Number(tenant);
    const button = $('create-submit');
    button.disabled = true;
    try {
      await api('POST', '', body, { 'Idempotency-Key': $('create-form').dataset.key || ($('create-form').dataset.key = idempotencyKey()) });
      delete $('create-form').dataset.key;
      $('create').close();
      notice(t('create.done', { name: body.name }));
      list.page = 1;
      await Promise.all([loadList(), loadStats()]);
    } catch (e) {
      // A 4xx means this request is settled: the next submit is a new backup.
      if (e.status && e.status < 500) delete $('create-form').dataset.key;
      show($('create-error'), e.message);
    } finally {
      button.disabled = false;
    }
  }

  // Restore
  let restoring = null;
  function restoreBody(dry) {
    const body = { confirm: true };
    if (dry) body.dry_run = true;
    if (isPlatform()) {
      const target = $('r-target').value.trim();
      if (target) body.target_database = target;
      if ($('r-replace').checked) body.replace = true;
    }
    return body;
  }
  function openRestore(b) {
    restoring = b;
    $('restore-form').reset();
    $('r-name').textContent = b.name;
    $('r-confirm-label').textContent = t('restore.typeName', { name: b.name });
    $('r-preview-out').replaceChildren();
    $('r-platform').hidden = !isPlatform();
    $('r-submit').disabled = true;
    show($('restore-error'), '');
    if ($('detail').open) $('detail').close();
    $('restore').showModal();
    $('r-preview').focus();
  }
  async function previewRestore() {
    const out = $('r-preview-out');
    show($('restore-error'), '');
    out.replaceChildren(h('p', { class: 'msg' }, t('restore.previewing')));
    try {
      let res = await api('POST', '/' + restoring.uuid + '/restore', restoreBody(true));
      let r = res && res.restore;
      // A dry run recorded as a restore row computes its preview in the background.
      for (let i = 0; r && !r.preview && ACTIVE.includes(r.status) && i < 120 && $('restore').open; i++) {
        await new Promise((ok) => setTimeout(ok, POLL_MS));
        r = await api('GET', '/restores/' + r.uuid);
      }
      const nodes = [];
      if (res && res.message) nodes.push(h('p', { class: 'msg', 'data-preview': 'message' }, res.message));
      if (r && r.preview) nodes.push(previewTable(r.preview));
      if (r && r.error_message) nodes.push(h('pre', { class: 'error' }, r.error_message));
      out.replaceChildren(...nodes);
    } catch (e) {
      out.replaceChildren();
      show($('restore-error'), e.message);
    }
  }
  async function submitRestore(ev) {
    ev.preventDefault();
    if ($('r-confirm').value.trim() !== restoring.name) return;
    const button = $('r-submit');
    button.disabled = true;
    try {
      await api('POST', '/' + restoring.uuid + '/restore', restoreBody(false), { 'Idempotency-Key': idempotencyKey() });
      $('restore').close();
      notice(t('restore.queued', { name: restoring.name }));
      await openDetail(restoring.uuid);
    } catch (e) {
      show($('restore-error'), e.message);
      button.disabled = false;
    }
  }

  // Delete
  let deleting = null;
  async function openDelete(b) {
    deleting = b;
    $('delete-form').reset();
    $('d-name').textContent = b.name;
    show($('delete-error'), '');
    $('d-chain').hidden = true;
    $('d-force-row').hidden = true;
    if ($('detail').open) $('detail').close();
    $('delete').showModal();
    try {
      const d = await api('GET', '/' + b.uuid);
      const children = (d.chain && (d.chain.children || d.chain.dependents)) || [];
      if (children.length) {
        const names = children.map((c) => (typeof c === 'object' && c ? c.name || c.uuid : c));
        show($('d-chain'), t('delete.chain', { n: children.length, list: names.join(', ') }));
        $('d-force-row').hidden = false;
      }
    } catch (_) { /* the delete itself reports */ }
  }
  async function submitDelete(ev) {
    ev.preventDefault();
    const force = !$('d-force-row').hidden && $('d-force').checked;
    try {
      await api('DELETE', '/' + deleting.uuid + (force ? '?force=true' : ''));
      $('delete').close();
      notice(t('delete.done', { name: deleting.name }));
      await Promise.all([loadList(), loadStats()]);
    } catch (e) {
      if (e.status === 409 && e.body && e.body.code === 'backup_has_dependents') $('d-force-row').hidden = false;
      show($('delete-error'), e.message);
    }
  }

  // Policy: the fields come from the API, so new policy fields appear without a page change.
  let policyShape = {};
  async function openPolicy() {
    show($('policy-error'), '');
    let p;
    try {
      p = await api('GET', '/policy');
    } catch (e) {
      notice(e.message, true);
      return;
    }
    policyShape = p;
    const fields = Object.entries(p).map(([k, v]) => {
      const id = 'p-' + k;
      const label = I18N[lang]['policy.' + k] ? t('policy.' + k) : k;
      let input;
      if (typeof v === 'boolean') {
        return h('label', { class: 'check' }, h('input', { type: 'checkbox', id, name: k, checked: v }), label);
      } else if (typeof v === 'number') {
        input = h('input', { type: 'number', id, name: k, value: String(v), step: '1' });
      } else if (v !== null && typeof v === 'object') {
        input = h('textarea', { id, name: k, rows: 3, class: 'mono' }, JSON.stringify(v));
      } else {
        input = h('input', { id, name: k, value: v ?? '', placeholder: v === null || k.endsWith('_cron') ? t('policy.null') : null, autocomplete: 'off' });
      }
      return h('div', {}, h('label', { for: id }, label), input);
    });
    $('policy-fields').replaceChildren(...fields);
    $('policy').showModal();
  }
  async function submitPolicy(ev) {
    ev.preventDefault();
    const body = {};
    for (const [k, v] of Object.entries(policyShape)) {
      const el = $('p-' + k);
      if (typeof v === 'boolean') body[k] = el.checked;
      else if (typeof v === 'number') body[k] = el.value === '' ? null : Number(el.value);
      else if (v !== null && typeof v === 'object') {
        try { body[k] = JSON.parse(el.value); } catch (e) { return show($('policy-error'), k + ': ' + e.message); }
      } else body[k] = el.value.trim() === '' ? null : el.value.trim();
    }
    try {
      await api('PUT', '/policy', body);
      $('policy').close();
      notice(t('policy.saved'));
    } catch (e) {
      show($('policy-error'), e.message);
    }
  }

  // ---- language --------------------------------------------------------------------------
  function applyLang() {
    document.documentElement.lang = lang === 'zh' ? 'zh-CN' : 'en';
    document.title = t('title') + ' · RiverEdge';
    for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
    for (const el of document.querySelectorAll('[data-i18n-placeholder]')) el.placeholder = t(el.dataset.i18nPlaceholder);
    $('lang').textContent = t('langSwitch');
    $('lang').setAttribute('aria-label', lang === 'zh' ? 'Switch to English' : '切换到中文');
    if (token) {
      setWho();
      renderList();
      loadStats();
      if ($('detail').open && current.detail) loadDetail(current.detail.uuid);
      if ($('restore').open && restoring) $('r-confirm-label').textContent = t('restore.typeName', { name: restoring.name });
    }
  }

  // ---- wiring ----------------------------------------------------------------------------
  function init() {
    applyLang();
    $('lang').addEventListener('click', () => {
      lang = lang === 'zh' ? 'en' : 'zh';
      localStorage.setItem(LANG_KEY, lang);
      applyLang();
    });
    $('login-form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const problem = useToken($('token').value);
      if (problem) return show($('login-error'), problem);
      sessionStorage.setItem(OWN_TOKEN, token);
      sessionStorage.removeItem(LOGGED_OUT);
      $('token').value = '';
      await enter();
    });
    $('logout').addEventListener('click', () => {
      sessionStorage.removeItem(OWN_TOKEN);
      sessionStorage.setItem(LOGGED_OUT, '1');
      showLogin('');
    });
    $('refresh').addEventListener('click', () => Promise.all([loadList(), loadStats()]));
    $('filters').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const data = new FormData(ev.target);
      list.filters = Object.fromEntries([...data.entries()].filter(([, v]) => v !== ''));
      list.page = 1;
      loadList();
    });
    $('filters').addEventListener('reset', () => {
      list.filters = {};
      list.page = 1;
      setTimeout(loadList);
    });
    $('prev').addEventListener('click', () => { list.page = Math.max(1, list.page - 1); loadList(); });
    $('next').addEventListener('click', () => { list.page += 1; loadList(); });
    $('page-size').addEventListener('change', (ev) => { list.pageSize = Number(ev.target.value); list.page = 1; loadList(); });
    $('open-create').addEventListener('click', openCreate);
    $('c-scope').addEventListener('change', syncCreateScope);
    $('c-table-filter').addEventListener('input', loadTables);
    $('create-form').addEventListener('submit', submitCreate);
    $('r-preview').addEventListener('click', previewRestore);
    $('r-confirm').addEventListener('input', () => { $('r-submit').disabled = $('r-confirm').value.trim() !== (restoring && restoring.name); });
    $('restore-form').addEventListener('submit', submitRestore);
    $('delete-form').addEventListener('submit', submitDelete);
    $('open-policy').addEventListener('click', openPolicy);
    $('policy-form').addEventListener('submit', submitPolicy);
    for (const b of document.querySelectorAll('[data-close]')) b.addEventListener('click', () => b.closest('dialog').close());
    $('detail').addEventListener('close', () => { current.detail = null; current.active = false; });

    const saved = readToken();
    if (saved && !useToken(saved)) enter();
    else showLogin(saved ? t('login.expired') : '');
  }
  document.addEventListener('DOMContentLoaded', init);
})();
