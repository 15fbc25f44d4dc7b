from setuptools import find_packages, setup

package_name = 'fleet_agent'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    package_data={package_name: ['py.typed']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='fleetlanes maintainers',
    maintainer_email='maintainers@fleetlanes.dev',
    description='Robot-side fleetlanes node: idempotent command intake, executor plug-ins, heartbeats.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'fleet_agent = fleet_agent.main:main',
            'fleet_agent_store = fleet_agent.store_cli:main',
        ],
    },
)
