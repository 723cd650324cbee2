"""Package-level checks: import boundaries, entry points, launch files, configs, lint."""
import ast
import configparser
import importlib
import os
import py_compile
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PKG = os.path.join(REPO, 'cloudseg_ros')

# folder (or file) -> modules it must never import
FORBIDDEN = {
    'core': {'rclpy', 'torch', 'torchvision'},
    'nets': {'rclpy'},
    'inference': {'rclpy'},
    'training': {'rclpy'},
    'nodes/edge_node.py': {'torch', 'torchvision'},
    'nodes/camera_replay_node.py': {'torch', 'torchvision'},
    'tools/bench_edge.py': {'torch', 'torchvision'},
    # Bags are read, written and reported on a laptop without ROS; record and view run beside
    # robots, which may have no torch.
    'tools/bag_writer.py': {'rclpy', 'torch', 'torchvision'},
    'tools/msg_definitions.py': {'rclpy', 'torch', 'torchvision'},
    'tools/report.py': {'rclpy', 'torch', 'torchvision'},
    'tools/demo_report.py': {'rclpy', 'torch', 'torchvision'},
    'tools/record.py': {'torch', 'torchvision'},
    'tools/view.py': {'torch', 'torchvision'},
}


def _imports(path):
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def _python_files(rel):
    path = os.path.join(PKG, rel)
    if path.endswith('.py'):
        return [path]
    return [os.path.join(root, f) for root, _, files in os.walk(path)
            for f in files if f.endswith('.py')]


def _local_closure(path, seen):
    """Files of this package imported (transitively) by `path`."""
    for module in _imports(path):
        if not module.startswith('cloudseg_ros.') or module == 'cloudseg_ros.msg':
            continue
        target = os.path.join(REPO, *module.split('.')) + '.py'
        if os.path.isfile(target) and target not in seen:
            seen.add(target)
            _local_closure(target, seen)
    return seen


@pytest.mark.parametrize('rel', sorted(FORBIDDEN))
def test_import_boundaries_hold_transitively(rel):
    for path in _python_files(rel):
        for dep in {path} | _local_closure(path, set()):
            bad = {m.split('.')[0] for m in _imports(dep)} & FORBIDDEN[rel]
            assert not bad, f'{path} reaches {bad} through {dep}'


def test_console_scripts_resolve():
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(REPO, 'setup.cfg'))
    scripts = cfg['options.entry_points']['console_scripts'].strip().splitlines()
    assert len(scripts) >= 5
    for line in scripts:
        _, target = (part.strip() for part in line.split('='))
        module, func = target.split(':')
        spec = importlib.util.find_spec(module)
        assert spec is not None, module
        tree = ast.parse(open(spec.origin).read())
        assert func in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}, target


def test_cli_commands_exist():
    from cloudseg_ros.cli import COMMANDS
    for name, (module, _) in COMMANDS.items():
        assert importlib.util.find_spec(module) is not None, f'{name}: {module}'


@pytest.mark.parametrize('name', sorted(os.listdir(os.path.join(REPO, 'launch'))))
def test_launch_files_compile_and_define_description(name, tmp_path):
    path = os.path.join(REPO, 'launch', name)
    py_compile.compile(path, cfile=str(tmp_path / 'x.pyc'), doraise=True)
    tree = ast.parse(open(path).read())
    assert 'generate_launch_description' in {n.name for n in tree.body
                                             if isinstance(n, ast.FunctionDef)}


def test_configs_parse_and_package_xml_is_format_3():
    for name in ('robot.yaml', 'cloud.yaml', 'controller.yaml'):
        data = yaml.safe_load(open(os.path.join(REPO, 'config', name)))
        assert data and all('ros__parameters' in v for v in data.values()), name
    root = ET.parse(os.path.join(REPO, 'package.xml')).getroot()
    assert root.get('format') == '3' and root.findtext('name') == 'cloudseg_ros'
    assert root.find('export').findtext('build_type') == 'ament_cmake'


def test_flake8_clean():
    paths = [os.path.join(REPO, p) for p in ('cloudseg_ros', 'test', 'launch')]
    result = subprocess.run([sys.executable, '-m', 'flake8', *paths],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]


@pytest.mark.parametrize('yaml_name, node', [('robot.yaml', 'edge'),
                                             ('robot.yaml', 'camera_replay'),
                                             ('cloud.yaml', 'cloud'),
                                             ('controller.yaml', 'controller')])
def test_shipped_yaml_lists_every_parameter_at_its_default(yaml_name, node):
    module = importlib.import_module(f'cloudseg_ros.nodes.{node}_node')
    listed = yaml.safe_load(open(os.path.join(REPO, 'config', yaml_name)))
    values = listed[f'/**/{node}']['ros__parameters']
    specs = (module.PARAMS + getattr(module, 'UPLINK_PARAMS', ())
             + getattr(module, 'DIAGNOSTICS_PARAMS', ()))
    if node in ('edge', 'cloud'):  # managed nodes
        specs += importlib.import_module('cloudseg_ros.ros.lifecycle').LIFECYCLE_PARAMS
    assert values == {spec.name: spec.default for spec in specs}


# Imported module -> its rosdep key. Modules installed with pip (torch, simplejpeg) or optional
# (cv_bridge, used when importable) are not dependencies, but package.xml's comment names them.
ROSDEP_KEYS = {'numpy': 'python3-numpy', 'cv2': 'python3-opencv', 'yaml': 'python3-yaml',
               'av': 'python3-av', 'matplotlib': 'python3-matplotlib',
               'cryptography': 'python3-cryptography', 'zstandard': 'python3-zstandard'}
NOT_DECLARED = {'torch', 'simplejpeg', 'cv_bridge', 'mcap', 'mcap_ros2', 'foxglove', 'zenoh'}


def test_package_xml_lists_every_runtime_dependency():
    root = ET.parse(os.path.join(REPO, 'package.xml')).getroot()
    runtime = {e.text for e in root if e.tag in ('depend', 'exec_depend')}
    comments = open(os.path.join(REPO, 'package.xml')).read()
    files = _python_files('.') + [os.path.join(REPO, 'launch', f)
                                  for f in os.listdir(os.path.join(REPO, 'launch'))]
    imported = {m.split('.')[0] for path in files for m in _imports(path)}
    third_party = imported - set(sys.stdlib_module_names) - {'cloudseg_ros'}
    assert third_party, 'no imports found'
    for module in sorted(third_party):
        if module in NOT_DECLARED:
            assert module in comments, f'{module}: say in package.xml why it is not listed'
        else:
            assert ROSDEP_KEYS.get(module, module) in runtime, f'{module} not in package.xml'
