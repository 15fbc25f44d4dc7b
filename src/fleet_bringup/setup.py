from pathlib import Path

from setuptools import find_packages, setup

package_name = 'fleet_bringup'
here = Path(__file__).resolve().parent


def tree(top: str) -> list[tuple[str, list[str]]]:
    """data_files entries installing every file under `top` (launch/ and config/ link to the workspace's top-level
    folders, so with --symlink-install those stay the one copy) into share/<package>/<top>, keeping subfolders."""
    entries: dict[str, list[str]] = {}
    for path in sorted((here / top).rglob('*')):
        if path.is_file() and '__pycache__' not in path.parts:
            relative = path.relative_to(here)
            entries.setdefault(f'share/{package_name}/{relative.parent}', []).append(str(relative))
    return sorted(entries.items())


setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    package_data={package_name: ['py.typed']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        *tree('launch'),
        *tree('config'),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='fleetlanes maintainers',
    maintainer_email='maintainers@fleetlanes.dev',
    description='Bring-up of fleetlanes deployments: node sets, launch files, configuration, process supervisor.',
    license='Apache-2.0',
)
