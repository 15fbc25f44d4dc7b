from setuptools import find_packages, setup

package_name = 'fleet_observability'

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
    description='fleetlanes observability: metrics, diagnostics, Foxglove server, MCAP recording and trace tools.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'fleet_foxglove = fleet_observability.foxglove_server:main',
            'fleet_record = fleet_observability.record_main:main',
        ],
    },
)
