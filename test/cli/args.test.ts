import { describe, expect, it } from 'vitest';
import { ACTIONS, findAction, type ActionDef } from '../../controller/cli/actions.ts';
import { buildRequest, helpText, parseArgs, requestTarget, translateCondition, usageLine } from '../../controller/cli/args.ts';

function action(name: string): ActionDef {
  const def = findAction(name);
  if (!def) throw new Error(`no action ${name}`);
  return def;
}

/** The REST call a command line makes, as method, target and body. */
function rest(argv: string[], session = 'sess') {
  const [name, ...rest] = argv;
  const def = action(name!);
  const req = buildRequest(def, parseArgs(def, rest), { session });
  return { method: req.method, target: requestTarget(req), body: req.body };
}

describe('translateCondition', () => {
  it.each([
    ['managementIp=1.2.3.4', 'managementIp=1.2.3.4'],
    ['name~=kvm%', 'name~=kvm%'],
    ['name!~=kvm%', 'name!~=kvm%'],
    ['vmInstance.vmNics.ip=10.0.0.5', 'vmInstance.vmNics.ip=10.0.0.5'],
    ['cpuNum>=4', 'cpuNum>=4'],
    ['cpuNum<=4', 'cpuNum<=4'],
    ['cpuNum>4', 'cpuNum>4'],
    ['cpuNum<4', 'cpuNum<4'],
    ['state!=Enabled', 'state!=Enabled'],
    ['state?=Enabled,Disabled', 'state?=Enabled,Disabled'],
    ['state!?=Enabled,Disabled', 'state!?=Enabled,Disabled'],
    ['description=null', 'description is null'],
    ['description!=null', 'description not null'],
    ['description is null', 'description is null'],
    // The value keeps everything after the operator, `=` included, and is not trimmed.
    ['tag=a=b', 'tag=a=b'],
    ['name= x ', 'name= x '],
    ['name=', 'name='],
    // Only the whole word null means null.
    ['name=nullable', 'name=nullable'],
    ['name~=null', 'name~=null'],
  ])('%s -> q=%s', (arg, q) => {
    expect(translateCondition(arg)).toBe(q);
  });

  it.each(['=x', '1abc=2', 'name', 'na-me=x', '>3'])('rejects [%s]', (arg) => {
    expect(() => translateCondition(arg)).toThrow(/is not <field><operator><value>/);
  });
});

describe('parseArgs + buildRequest: one REST call per action', () => {
  it.each<[string, string[], { method: string; target: string; body?: unknown }]>([
    [
      'login',
      ['LogInByAccount', 'accountName=admin', 'password=p@ss=word'],
      { method: 'PUT', target: '/zstack/v1/accounts/login', body: { logInByAccount: { accountName: 'admin', password: 'p@ss=word' } } },
    ],
    ['logout', ['LogOut'], { method: 'DELETE', target: '/zstack/v1/accounts/sessions/sess', body: undefined }],
    [
      'create zone',
      ['CreateZone', 'name=z1', 'description=first zone'],
      { method: 'POST', target: '/zstack/v1/zones', body: { params: { name: 'z1', description: 'first zone' } } },
    ],
    [
      'create cluster, hypervisorType defaults to KVM',
      ['CreateCluster', 'zoneUuid=zu', 'name=c1'],
      { method: 'POST', target: '/zstack/v1/clusters', body: { params: { zoneUuid: 'zu', name: 'c1', hypervisorType: 'KVM' } } },
    ],
    [
      'add host, sshPort is a number, tags beside params',
      ['AddKVMHost', 'clusterUuid=cu', 'managementIp=10.0.0.1', 'name=h1', 'username=root', 'password=pw', 'sshPort=2222', 'systemTags=reservedMemory::1G,a::b'],
      {
        method: 'POST',
        target: '/zstack/v1/hosts/kvm',
        body: {
          params: { clusterUuid: 'cu', managementIp: '10.0.0.1', name: 'h1', username: 'root', password: 'pw', sshPort: 2222 },
          systemTags: ['reservedMemory::1G', 'a::b'],
        },
      },
    ],
    [
      'change host state',
      ['ChangeHostState', 'uuid=hu', 'stateEvent=preMaintain'],
      { method: 'PUT', target: '/zstack/v1/hosts/hu/actions', body: { changeHostState: { stateEvent: 'preMaintain' } } },
    ],
    ['reconnect', ['ReconnectHost', 'uuid=hu'], { method: 'PUT', target: '/zstack/v1/hosts/hu/actions', body: { reconnectHost: {} } }],
    [
      'update host',
      ['UpdateHost', 'uuid=hu', 'name=h2', 'managementIp=10.0.0.2'],
      { method: 'PUT', target: '/zstack/v1/hosts/hu/actions', body: { updateHost: { name: 'h2', managementIp: '10.0.0.2' } } },
    ],
    ['delete host', ['DeleteHost', 'uuid=hu', 'deleteMode=Enforcing'], { method: 'DELETE', target: '/zstack/v1/hosts/hu?deleteMode=Enforcing', body: undefined }],
    ['delete host, default mode', ['DeleteHost', 'uuid=hu'], { method: 'DELETE', target: '/zstack/v1/hosts/hu', body: undefined }],
    ['delete zone', ['DeleteZone', 'uuid=zu', 'deleteMode=Permissive'], { method: 'DELETE', target: '/zstack/v1/zones/zu?deleteMode=Permissive', body: undefined }],
    ['delete cluster', ['DeleteCluster', 'uuid=cu'], { method: 'DELETE', target: '/zstack/v1/clusters/cu', body: undefined }],
    [
      'update global config',
      ['UpdateGlobalConfig', 'category=host', 'name=ping.interval', 'value=30'],
      { method: 'PUT', target: '/zstack/v1/global-configurations/host/ping.interval/actions', body: { updateGlobalConfig: { value: '30' } } },
    ],
    [
      'create system tag',
      ['CreateSystemTag', 'resourceType=HostVO', 'resourceUuid=hu', 'tag=reservedMemory::1G'],
      { method: 'POST', target: '/zstack/v1/system-tags', body: { params: { resourceType: 'HostVO', resourceUuid: 'hu', tag: 'reservedMemory::1G' } } },
    ],
    [
      'create user tag',
      ['CreateUserTag', 'resourceType=ZoneVO', 'resourceUuid=zu', 'tag=blue'],
      { method: 'POST', target: '/zstack/v1/user-tags', body: { params: { resourceType: 'ZoneVO', resourceUuid: 'zu', tag: 'blue' } } },
    ],
    [
      'update system tag',
      ['UpdateSystemTag', 'uuid=tu', 'tag=reservedMemory::2G'],
      { method: 'PUT', target: '/zstack/v1/system-tags/tu/actions', body: { updateSystemTag: { tag: 'reservedMemory::2G' } } },
    ],
    ['delete tag', ['DeleteTag', 'uuid=tu'], { method: 'DELETE', target: '/zstack/v1/tags/tu', body: undefined }],
    [
      'bootstrap token',
      ['CreateBootstrapToken', 'clusterUuid=cu', 'ttlSeconds=600'],
      { method: 'POST', target: '/zstack/v1/hosts/bootstrap-tokens', body: { params: { clusterUuid: 'cu', ttlSeconds: 600 } } },
    ],
    ['get job', ['GetJob', 'uuid=ju'], { method: 'GET', target: '/zstack/v1/api-jobs/ju', body: undefined }],
    ['path segments are encoded', ['DeleteTag', 'uuid=a/b?c'], { method: 'DELETE', target: '/zstack/v1/tags/a%2Fb%3Fc', body: undefined }],
    ['action names are matched case-insensitively', ['reconnecthost', 'uuid=hu'], { method: 'PUT', target: '/zstack/v1/hosts/hu/actions', body: { reconnectHost: {} } }],
  ])('%s', (_name, argv, want) => {
    expect(rest(argv)).toEqual(want);
  });
});

describe('query actions', () => {
  it.each<[string, string[], string]>([
    ['no conditions', ['QueryHost'], '/zstack/v1/hosts'],
    ['one condition', ['QueryHost', 'managementIp=1.2.3.4'], '/zstack/v1/hosts?q=managementIp%3D1.2.3.4'],
    [
      'each condition its own q, encoded',
      ['QueryHost', 'name~=kvm%', 'vmInstance.vmNics.ip=10.0.0.5', 'cpuNum>=4'],
      '/zstack/v1/hosts?q=name~%3Dkvm%25&q=vmInstance.vmNics.ip%3D10.0.0.5&q=cpuNum%3E%3D4',
    ],
    ['null tests', ['QueryVmInstance', 'hostUuid=null', 'lastHostUuid!=null'], '/zstack/v1/vm-instances?q=hostUuid%20is%20null&q=lastHostUuid%20not%20null'],
    ['sort ascending is %2B', ['QueryZone', 'sortBy=createDate'], '/zstack/v1/zones?sort=%2BcreateDate'],
    ['sort descending', ['QueryCluster', 'sortBy=name', 'sortDirection=desc'], '/zstack/v1/clusters?sort=-name'],
    [
      'reserved keys after conditions, in REST names',
      ['QueryHost', 'fields=uuid,name', 'limit=20', 'state=Enabled', 'start=5', 'replyWithCount=true', 'count=false'],
      '/zstack/v1/hosts?q=state%3DEnabled&limit=20&start=5&count=false&replyWithCount=true&fields=uuid%2Cname',
    ],
    ['global configs', ['QueryGlobalConfig', 'category=host'], '/zstack/v1/global-configurations?q=category%3Dhost'],
    ['system tags', ['QuerySystemTag', 'resourceUuid=hu'], '/zstack/v1/system-tags?q=resourceUuid%3Dhu'],
    ['user tags', ['QueryUserTag', 'tag~=b%'], '/zstack/v1/user-tags?q=tag~%3Db%25'],
    ['a condition may repeat a field', ['QueryHost', 'cpuNum>=2', 'cpuNum<=8'], '/zstack/v1/hosts?q=cpuNum%3E%3D2&q=cpuNum%3C%3D8'],
    ['dates with spaces and commas', ['QueryHost', 'createDate>=Jun 1, 2015 6:49:24 PM'], '/zstack/v1/hosts?q=createDate%3E%3DJun%201%2C%202015%206%3A49%3A24%20PM'],
  ])('%s', (_name, argv, target) => {
    const r = rest(argv);
    expect(r.method).toBe('GET');
    expect(r.target).toBe(target);
    expect(r.body).toBeUndefined();
  });

  it('the query string decodes back to the conditions', () => {
    const target = rest(['QueryHost', 'name~=a+b %', 'uuid?=x,y']).target;
    const params = new URL(target, 'http://x').searchParams;
    expect(params.getAll('q')).toEqual(['name~=a+b %', 'uuid?=x,y']);
  });
});

describe('usage errors name the key', () => {
  it.each<[string, string[], RegExp]>([
    ['unknown key', ['AddKVMHost', 'clusterUuid=c', 'managementIp=1', 'name=n', 'username=u', 'password=p', 'sshport=22'], /AddKVMHost has no key \[sshport\]; its keys are clusterUuid, .*sshPort/],
    ['missing required key', ['AddKVMHost', 'managementIp=1', 'name=n', 'username=u', 'password=p'], /^AddKVMHost needs key \[clusterUuid\]$/],
    ['missing stateEvent', ['ChangeHostState', 'uuid=u'], /needs key \[stateEvent\]/],
    ['bad enum', ['ChangeHostState', 'uuid=u', 'stateEvent=Enable'], /stateEvent must be one of enable, disable, maintain, preMaintain, not \[Enable\]/],
    ['bad deleteMode', ['DeleteHost', 'uuid=u', 'deleteMode=force'], /deleteMode must be one of Permissive, Enforcing/],
    ['not an integer', ['AddKVMHost', 'clusterUuid=c', 'managementIp=1', 'name=n', 'username=u', 'password=p', 'sshPort=ssh'], /sshPort takes an integer, not \[ssh\]/],
    ['given twice', ['CreateZone', 'name=a', 'name=b'], /key \[name\] is given twice/],
    ['not key=value', ['CreateZone', 'name'], /argument \[name\] is not key=value/],
    ['empty key', ['CreateZone', '=x'], /argument \[=x\] is not key=value/],
    ['a key for an action without keys', ['LogOut', 'x=1'], /LogOut has no key \[x\]; it takes no keys/],
    ['a condition on a key-value action', ['UpdateHost', 'uuid=u', 'name~=x'], /UpdateHost has no key \[name~\]/],
    ['reserved query key with an operator', ['QueryHost', 'limit>=3'], /limit is not a condition; write limit=<value>, not >=/],
    ['reserved query key value', ['QueryHost', 'limit=ten'], /limit takes an integer/],
    ['sortDirection value', ['QueryHost', 'sortBy=name', 'sortDirection=up'], /sortDirection must be one of asc, desc/],
    ['sortDirection alone', ['QueryHost', 'sortDirection=desc'], /sortDirection needs sortBy/],
    ['malformed condition', ['QueryHost', 'cpu-num=3'], /argument \[cpu-num=3\] is not <field><operator><value>/],
  ])('%s', (_name, [name, ...args], message) => {
    expect(() => parseArgs(action(name!), args)).toThrow(message);
  });
});

describe('help', () => {
  it('has one line per action, each action once', () => {
    const lines = helpText().split('\n');
    for (const a of ACTIONS) {
      expect(lines.filter((l) => l.trim().split(' ')[0] === a.name)).toEqual([`  ${usageLine(a)}`]);
    }
  });

  it('action names are unique', () => {
    expect(new Set(ACTIONS.map((a) => a.name)).size).toBe(ACTIONS.length);
  });

  it.each([
    ['AddKVMHost', 'AddKVMHost clusterUuid= managementIp= name= username= password= [sshPort=N] [description=] [resourceUuid=] [systemTags=a,b] [userTags=a,b]'],
    ['ChangeHostState', 'ChangeHostState uuid= stateEvent=enable|disable|maintain|preMaintain'],
    ['DeleteHost', 'DeleteHost uuid= [deleteMode=Permissive|Enforcing]'],
    ['LogOut', 'LogOut'],
    ['QueryHost', 'QueryHost [<field><op><value> ...] [limit=N] [start=N] [count=true|false] [replyWithCount=true|false] [sortBy=] [sortDirection=asc|desc] [fields=a,b]'],
  ])('%s usage', (name, line) => {
    expect(usageLine(action(name))).toBe(line);
  });

  it('every action named in the brief is there', () => {
    const names = [
      'LogInByAccount', 'LogOut', 'CreateZone', 'CreateCluster', 'AddKVMHost', 'ChangeHostState', 'ReconnectHost',
      'UpdateHost', 'DeleteHost', 'DeleteZone', 'DeleteCluster', 'QueryZone', 'QueryCluster', 'QueryHost',
      'QueryVmInstance', 'QueryGlobalConfig', 'QuerySystemTag', 'QueryUserTag', 'UpdateGlobalConfig',
      'CreateSystemTag', 'CreateUserTag', 'DeleteTag', 'UpdateSystemTag', 'CreateBootstrapToken', 'GetJob',
      // VMs and maintenance
      'CreateVmInstance', 'StartVmInstance', 'StopVmInstance', 'RebootVmInstance', 'MigrateVm', 'DestroyVmInstance',
      'GetVmMigrationCandidateHosts', 'GetHostMaintenancePlan',
      'CreateMaintenanceWindow', 'QueryMaintenanceWindow', 'DeleteMaintenanceWindow',
      // bootstrap tokens listed and revoked (issue 9)
      'QueryBootstrapToken', 'DeleteBootstrapToken',
    ];
    expect(ACTIONS.map((a) => a.name).sort()).toEqual([...names].sort());
  });
});
